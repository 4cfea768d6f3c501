"""Translate stage: edit modes and batching of edits through one backend call."""

from __future__ import annotations

import pytest
import torch

from starcli.translate import edit_crops


def _biased_generator(calls: list[int]):
    """A fake generator with a reconstruction error (+0.1 everywhere) that brightens the first
    8 rows when label 0 is on."""

    def translate(crops: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        calls.append(len(crops))
        out = crops + 0.1
        out[labels[:, 0] > 0.5, :, :8] += 0.3
        return out.clamp(0, 1)

    return translate


def test_difference_mode_cancels_reconstruction_error_outside_the_edit():
    crops = torch.full((3, 3, 16, 16), 0.4)
    source = torch.zeros(3, 2)
    target = torch.tensor([[1.0, 0.0]] * 3)
    calls: list[int] = []
    direct = edit_crops(_biased_generator(calls), crops, source, [target], "direct")[0]
    difference = edit_crops(_biased_generator(calls), crops, source, [target], "difference")[0]
    assert calls == [3, 6], "each mode makes one batched call (difference adds the source pass)"
    torch.testing.assert_close(direct[:, :, 8:], torch.full_like(direct[:, :, 8:], 0.5))
    torch.testing.assert_close(difference[:, :, 8:], crops[:, :, 8:])  # untouched outside the edit
    torch.testing.assert_close(difference[:, :, :8], torch.full_like(difference[:, :, :8], 0.7))


def test_masked_mode_takes_the_generator_where_the_edit_acts_and_the_input_elsewhere():
    """masked: the full generator output (reconstruction error included, as direct) inside the
    edit's footprint, the input's exact pixels away from it, a blend only along its border."""
    crops = torch.full((2, 3, 32, 32), 0.4)
    source, target = torch.zeros(2, 2), torch.tensor([[1.0, 0.0]] * 2)
    calls: list[int] = []
    masked = edit_crops(_biased_generator(calls), crops, source, [target], "masked")[0]
    assert calls == [4]
    torch.testing.assert_close(masked[:, :, :7], torch.full_like(masked[:, :, :7], 0.8))  # G(x, c_trg)
    torch.testing.assert_close(masked[:, :, 9:], crops[:, :, 9:])  # untouched
    assert ((masked[:, :, 7:9] >= 0.4 - 1e-6) & (masked[:, :, 7:9] <= 0.8 + 1e-6)).all()
    # a weak edit (change below MASK_FULL_CHANGE) is blended in proportion, never amplified
    from starcli.translate import MASK_FULL_CHANGE, edit_footprint

    weak = crops + MASK_FULL_CHANGE / 2
    torch.testing.assert_close(edit_footprint(weak, crops), torch.full((2, 1, 32, 32), 0.5))


def test_several_edits_share_one_call_and_keep_order():
    crops = torch.rand(2, 3, 8, 8)
    calls: list[int] = []
    outs = edit_crops(_biased_generator(calls), crops, torch.zeros(2, 2), [torch.zeros(2, 2), torch.ones(2, 2)], "difference")
    assert calls == [6] and len(outs) == 2
    torch.testing.assert_close(outs[0], crops)


def test_unknown_mode_and_empty_batch():
    with pytest.raises(ValueError, match="direct, difference, masked"):
        edit_crops(lambda c, l: c, torch.rand(1, 3, 4, 4), torch.zeros(1, 1), [torch.ones(1, 1)], "magic")
    assert edit_crops(lambda c, l: c, torch.rand(0, 3, 4, 4), torch.zeros(0, 1), [torch.ones(0, 1)])[0].shape == (0, 3, 4, 4)


def test_strength_scales_every_edit():
    """0 keeps the input, 0.5 goes half way, 2 pushes the change twice as far (clipped to [0, 1])."""
    crops = torch.full((1, 3, 16, 16), 0.4)
    source, target = torch.zeros(1, 2), torch.tensor([[1.0, 0.0]])
    for mode in ("direct", "difference", "masked"):
        edited = {s: edit_crops(_biased_generator([]), crops, source, [target], mode, strength=s)[0] for s in (0.0, 0.5, 1.0, 2.0)}
        torch.testing.assert_close(edited[0.0], crops)
        torch.testing.assert_close(edited[0.5], (crops + edited[1.0]) / 2)
        torch.testing.assert_close(edited[2.0], (2 * edited[1.0] - crops).clamp(0, 1))
    top = edit_crops(_biased_generator([]), crops, source, [target], "difference", strength=2.0)[0][:, :, :8]
    torch.testing.assert_close(top, torch.full_like(top, 1.0))  # 0.4 + 2 * 0.3, clipped


def _critic_free_model():
    """A tiny generator-only model on one attribute (``Young``), 16 px."""
    from starcli.models import StarganModel
    from starcli.spec import ModelSpec
    from starcli.stargan import Generator, GeneratorConfig

    gen = GeneratorConfig(conv_dim=8, c_dim=1, repeat_num=1)
    return StarganModel(ModelSpec("m", ["Young"], 16, gen), Generator(gen), None)


def test_translator_rejects_an_out_of_range_strength():
    from starcli.errors import AttributeSpecError
    from starcli.translate import FaceTranslator

    with pytest.raises(AttributeSpecError, match="strength must be in"):
        FaceTranslator(_critic_free_model(), None, [], source="young", strength=5.0)


def test_config_and_translator_accept_and_reject_the_same_strengths():
    """One range (0-4) for ``translate.strength`` and FaceTranslator: both accept its bounds and
    both reject the nearest floats outside them."""
    import math

    from starcli.config import STRENGTH_RANGE, load_config
    from starcli.errors import AttributeSpecError, ConfigError
    from starcli.translate import FaceTranslator

    assert STRENGTH_RANGE == (0.0, 4.0)
    lo, hi = STRENGTH_RANGE
    model = _critic_free_model()
    for value in (lo, hi):
        assert load_config(None, overrides={"translate.strength": value}, search_cwd=False).translate.strength == value
        assert FaceTranslator(model, None, [], source="young", strength=value).strength == value
    for value in (math.nextafter(lo, -math.inf), math.nextafter(hi, math.inf)):
        with pytest.raises(ConfigError, match="translate.strength"):
            load_config(None, overrides={"translate.strength": value}, search_cwd=False)
        with pytest.raises(AttributeSpecError, match=r"strength must be in \[0, 4\]"):
            FaceTranslator(model, None, [], source="young", strength=value)


def test_critic_fallback_runs_in_fp32_like_the_backend_critic(tiny_model_dir, monkeypatch):
    """Without a backend ``classify`` the PyTorch critic runs in fp32 with autocast off, even
    inside a bf16 autocast region: logits within 1e-5 of the fp32 critic's, and the same labels as
    ``TorchBackend.classify`` (whatever the generator's precision)."""
    from starcli import translate
    from starcli.models import load
    from starcli_torch.cpu import CpuBackend

    model = load(tiny_model_dir)
    torch.manual_seed(1)
    crops = torch.rand(6, 3, 32, 32)
    with torch.no_grad():
        ref = model.discriminator(crops * 2 - 1)[1]
    seen: list[torch.Tensor] = []
    real = translate.labels_from_logits
    monkeypatch.setattr(translate, "labels_from_logits", lambda logits, spec: seen.append(logits) or real(logits, spec))
    plain = translate.estimate_source_labels(model, crops)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        nested = translate.estimate_source_labels(model, crops)
    assert len(seen) == 2
    for logits in seen:
        assert logits.dtype == torch.float32
        torch.testing.assert_close(logits, ref, rtol=0, atol=1e-5)
    classified = translate.estimate_source_labels(model, crops, CpuBackend(model, precision="bf16").classify)
    assert torch.equal(plain, classified) and torch.equal(nested, classified)
