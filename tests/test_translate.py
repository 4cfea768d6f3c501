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


def _two_region_generator(calls: list[int]):
    """No reconstruction error; label 0 adds 0.1 to the top 8 rows, label 1 adds 0.2 to the bottom 8."""

    def translate(crops: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        calls.append(len(crops))
        out = crops.clone()
        out[labels[:, 0] > 0.5, :, :8] += 0.1
        out[labels[:, 1] > 0.5, :, 8:] += 0.2
        return out

    return translate


@pytest.mark.parametrize("mode", ["direct", "difference", "masked"])
def test_card_boost_amplifies_only_its_attribute(mode):
    """A card's edit_strength {label 0: 3}: the label-0 change is drawn 3x, a label-1 change in the
    same edit stays as the model makes it, and a face whose label 0 does not change is untouched."""
    crops = torch.full((2, 3, 32, 16), 0.4)
    source = torch.tensor([[0.0, 0.0], [1.0, 0.0]])  # face 1 already has label 0
    only_0 = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    both = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    calls: list[int] = []
    out_0, out_both = edit_crops(_two_region_generator(calls), crops, source, [only_0, both], mode, boosts={0: 3.0})
    assert calls == [2 * 4], "one call: 2 edits + the label-0-only pass of the combined edit + the source"
    top, bottom = slice(2, 6), slice(26, 30)  # away from the footprint's blurred border
    torch.testing.assert_close(out_0[0, :, top], torch.full((3, 4, 16), 0.7))  # 0.4 + 3 * 0.1
    plain = edit_crops(_two_region_generator([]), crops, source, [only_0], mode)[0]
    torch.testing.assert_close(out_0[1], plain[1])  # label 0 unchanged on face 1: not boosted
    torch.testing.assert_close(out_both[0, :, top], torch.full((3, 4, 16), 0.7))
    torch.testing.assert_close(out_both[:, :, bottom], torch.full((2, 3, 4, 16), 0.6))  # 0.4 + 0.2, not boosted


def test_boost_of_a_single_attribute_edit_costs_no_extra_pass_and_strength_scales_edits():
    crops = torch.full((1, 3, 16, 16), 0.4)
    source, target = torch.zeros(1, 2), torch.tensor([[1.0, 0.0]])
    calls: list[int] = []
    boosted = edit_crops(_two_region_generator(calls), crops, source, [target], "direct", boosts={0: 2.0, 1: 5.0})[0]
    assert calls == [2]  # the edit and the source pass
    torch.testing.assert_close(boosted[0, :, :8], torch.full((3, 8, 16), 0.6))
    half = edit_crops(_two_region_generator(calls), crops, source, [target], "difference", strength=0.5)[0]
    torch.testing.assert_close(half[0, :, :8], torch.full((3, 8, 16), 0.45))
    none = edit_crops(_two_region_generator(calls), crops, source, [target], "masked", strength=0.0)[0]
    torch.testing.assert_close(none, crops)


def test_edit_strength_is_checked_on_cards_and_translators():
    from starcli.errors import AttributeSpecError, ModelError
    from starcli.spec import ModelSpec
    from starcli.stargan import GeneratorConfig

    gen = GeneratorConfig(conv_dim=8, c_dim=3, repeat_num=1)
    with pytest.raises(ModelError, match="'Black_Hair', which is not a binary attribute"):
        ModelSpec("m", ["Black_Hair", "Blond_Hair", "Young"], 16, gen, groups=[["Black_Hair", "Blond_Hair"]], edit_strength={"Black_Hair": 2})
    with pytest.raises(ModelError, match="must be in"):
        ModelSpec("m", ["Black_Hair", "Blond_Hair", "Young"], 16, gen, edit_strength={"Young": 0})
    spec = ModelSpec("m", ["Black_Hair", "Blond_Hair", "Young"], 16, gen, edit_strength={"Young": 2.5})
    assert ModelSpec.from_card(spec.to_card()).edit_boosts() == {2: 2.5}

    from starcli.models import StarganModel
    from starcli.stargan import Generator
    from starcli.translate import FaceTranslator

    model = StarganModel(spec, Generator(gen), None)
    with pytest.raises(AttributeSpecError, match="strength must be in"):
        FaceTranslator(model, None, [], source="hair=black", strength=5.0)
