"""starcli.train: config, losses, the loop, checkpoints, exact resume, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import typer
from safetensors.torch import load_file
from typer.testing import CliRunner

from starcli.cli.train_cmd import register
from starcli.errors import ConfigError
from starcli.stargan import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig
from starcli.train import (
    config_to_toml,
    gradient_penalty,
    load_train_config,
    lr_factor,
    paired_l1,
    FocusedSampler,
    PairCritic,
    focus_pair_indices,
    pair_critic_g_loss,
    pair_critic_loss,
    paired_region_l1,
    paired_shift_l1,
    paired_texture_l1,
    sample_target_labels,
    train,
)
from tests.test_data import ATTRS, make_csv_dataset

TINY = {
    "data.image_size": 16,
    "model.g_conv_dim": 8,
    "model.g_repeat_num": 1,
    "model.d_conv_dim": 8,
    "model.d_repeat_num": 2,
    "optim.n_critic": 2,
    "optim.decay_iters": 2,
    "run.batch_size": 4,
    "run.threads": 1,
    "data.workers": 1,
    "log.sample_count": 2,
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_csv_dataset(tmp_path_factory.mktemp("data") / "ds", n=8, size=16)


def tiny_config(data: Path, out: Path, **extra):
    ov = dict(TINY)
    ov.update({"data.path": str(data), "run.out": str(out)})
    ov.update({k.replace("__", "."): v for k, v in extra.items()})
    return load_train_config(overrides=ov)


# ------------------------------------------------------------------------------ pure helpers


def test_lr_decay_reaches_zero_at_last_iteration():
    assert lr_factor(1, 100, 50) == 1.0
    assert lr_factor(50, 100, 50) == 1.0
    assert lr_factor(75, 100, 50) == 0.5
    assert lr_factor(100, 100, 50) == 0.0
    assert lr_factor(99, 100, 0) == 1.0


def test_target_labels_keep_groups_one_hot():
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 0, 1], [1, 1, 0, 0]], dtype=torch.float32)
    for _ in range(20):
        t = sample_target_labels(labels, [[0, 1, 2]], g)
        assert t[:, :3].sum(1).tolist() == [1.0] * 4
        assert sorted(t[:, 3].tolist()) == sorted(labels[:, 3].tolist())  # shuffled, not invented


def test_paired_l1_weights_changed_pixels():
    src = torch.zeros(1, 3, 2, 2)
    tgt = src.clone()
    tgt[..., 0, 0] = 1.0  # one changed pixel
    fake = torch.zeros_like(src)
    base = paired_l1(fake, tgt, src, weight=1.0, threshold=0.03)
    up = paired_l1(fake, tgt, src, weight=5.0, threshold=0.03)
    assert up == pytest.approx(5 * base.item())


def test_paired_region_l1_gives_small_and_large_edits_equal_weight():
    src = torch.zeros(2, 3, 8, 8)
    tgt = src.clone()
    tgt[0, :, 0, 0] = 1.0  # pair 0 changes one pixel, pair 1 a whole half
    tgt[1, :, :4] = 1.0
    fake = src.clone()  # the generator left both unedited
    assert paired_region_l1(fake, tgt, src, threshold=0.03).item() == pytest.approx(1.0)
    assert paired_l1(fake, tgt, src, weight=1.0, threshold=0.03).item() == pytest.approx(33 / 128)
    fake[0] = tgt[0]  # the one-pixel edit done right halves the loss
    assert paired_region_l1(fake, tgt, src, threshold=0.03).item() == pytest.approx(0.5)
    # errors outside the changed pixels do not count; no changed pixel at all gives 0
    assert paired_region_l1(fake + 0.5 * (tgt == 0), tgt, src, threshold=0.03).item() == pytest.approx(0.5)
    assert paired_region_l1(fake, src, src, threshold=0.03).item() == 0.0


def test_paired_shift_l1_forgives_a_stroke_one_pixel_off_but_not_a_missing_one():
    src = torch.full((1, 3, 12, 12), -1.0)
    tgt = src.clone()
    tgt[..., 2:10, 5] = 1.0  # a thin vertical stroke
    near = src.clone()
    near[..., 2:10, 6] = 1.0  # the same stroke one pixel to the right
    blurred = src.clone()
    blurred[..., 2:10, 4:7] = -1.0 + 2.0 / 3  # the stroke's mean over its uncertain position
    assert paired_shift_l1(near, tgt, src, threshold=0.03).item() == pytest.approx(0.0)
    assert paired_shift_l1(tgt, tgt, src, threshold=0.03).item() == pytest.approx(0.0)
    missing = paired_shift_l1(src, tgt, src, threshold=0.03).item()
    assert missing > 0.2
    # the blur costs more than the sharp stroke one pixel off; the plain L1 prefers the blur and
    # sees no gain in the shifted stroke over leaving it out
    assert paired_shift_l1(blurred, tgt, src, threshold=0.03).item() > missing
    plain = {name: paired_region_l1(f, tgt, src, threshold=0.03).item() for name, f in [("near", near), ("blur", blurred), ("missing", src)]}
    assert plain["blur"] < plain["near"] == plain["missing"]
    # two pixels off is outside radius 1, inside radius 2
    far = src.clone()
    far[..., 2:10, 7] = 1.0
    assert paired_shift_l1(far, tgt, src, threshold=0.03, radius=1).item() > 0.2
    assert paired_shift_l1(far, tgt, src, threshold=0.03, radius=2).item() == pytest.approx(0.0)


def test_paired_texture_l1_ranks_a_sharp_stroke_nearby_above_a_blur_and_a_missing_one():
    src = torch.zeros(1, 3, 12, 12)
    tgt = src.clone()
    tgt[..., 2:10, 5] = -0.8  # a thin dark stroke
    shifted = {dx: src.clone() for dx in (1, 3)}
    for dx, img in shifted.items():
        img[..., 2:10, 5 + dx] = -0.8
    blurred = src.clone()
    blurred[..., 2:10, 4:7] = -0.8 / 3
    bright = src.clone()
    bright[..., 2:10, 5] = 0.8  # a bright stroke in the right place is not a dark one
    loss = {name: paired_texture_l1(f, tgt, src, threshold=0.03).item()
            for name, f in [("exact", tgt), ("near", shifted[1]), ("far", shifted[3]), ("blur", blurred), ("missing", src), ("bright", bright)]}
    assert loss["exact"] == pytest.approx(0.0)
    assert loss["near"] < loss["blur"] < loss["missing"]
    assert loss["far"] > loss["blur"] and loss["bright"] > loss["blur"]
    assert paired_texture_l1(src, src, src, threshold=0.03).item() == 0.0


def test_pair_critic_sees_only_a_7x7_patch_of_both_images():
    torch.manual_seed(0)
    critic = PairCritic(4)
    src = torch.randn(1, 3, 16, 16, requires_grad=True)
    cand = torch.randn(1, 3, 16, 16, requires_grad=True)
    scores = critic(src, cand)
    assert scores.shape == (1, 1, 16, 16)
    scores[0, 0, 8, 8].backward()
    for grad in (src.grad, cand.grad):
        seen = grad.abs().sum(1)[0] > 0
        assert seen[5:12, 5:12].all() and seen.sum() == 49  # rows/cols 8 +- 3 and nothing else


def test_pair_critic_hinge_counts_changed_pixels_only():
    changed = torch.zeros(2, 1, 4, 4)
    changed[:, :, 1:3, 1:3] = 1.0
    real, fake = torch.full((2, 1, 4, 4), 5.0), torch.full((2, 1, 4, 4), 7.0)
    real[changed.bool()], fake[changed.bool()] = 2.0, -2.0  # confident and right where it matters
    assert pair_critic_loss(real, fake, changed).item() == 0.0
    fake[changed.bool()] = 0.5  # undecided on the fakes: hinge 1.5 on each changed pixel
    assert pair_critic_loss(real, fake, changed).item() == pytest.approx(1.5)
    assert pair_critic_g_loss(fake, changed).item() == pytest.approx(-0.5)


def test_pair_critic_learns_to_tell_a_crisp_line_from_a_smear():
    """What it is for: trained on true targets with a crisp dark line and edits with the same
    line smeared over three columns, it scores the crisp line higher, also on new positions."""
    torch.manual_seed(0)

    def line(col: int, smear: bool) -> torch.Tensor:
        img = torch.zeros(3, 16, 16)
        if smear:
            img[:, 3:13, col - 1:col + 2] = -0.8 / 3
        else:
            img[:, 3:13, col] = -0.8
        return img

    critic = PairCritic(8)
    opt = torch.optim.Adam(critic.parameters(), 2e-3, (0.5, 0.999))
    src = torch.zeros(4, 3, 16, 16)
    for step in range(60):
        cols = [3 + (step + 2 * k) % 5 for k in range(4)]
        real = torch.stack([line(c, False) for c in cols])
        fake = torch.stack([line(c, True) for c in cols])
        changed = ((real - fake).abs().amax(1, keepdim=True) > 0.06).float()
        changed = torch.nn.functional.max_pool2d(changed, 5, stride=1, padding=2)
        loss = pair_critic_loss(critic(src, real), critic(src, fake), changed)
        opt.zero_grad()
        loss.backward()
        opt.step()
    critic.eval()
    with torch.no_grad():
        for col in (11, 12):  # positions it never saw
            crisp = critic(src[:1], line(col, False)[None])[0, 0, 3:13, col - 2:col + 3].mean()
            smear = critic(src[:1], line(col, True)[None])[0, 0, 3:13, col - 2:col + 3].mean()
            assert crisp > smear + 0.5


def test_focused_pairs_fill_their_share_of_every_batch():
    src = torch.tensor([[1.0, 0.0]] * 10)
    trg = src.clone()
    trg[[1, 4, 7], 0] = 0.0  # three pairs turn attribute A off
    trg[[2, 5], 1] = 1.0  # two turn B on
    assert focus_pair_indices(src, trg, ["A", "B"], ["A=0"]).tolist() == [1, 4, 7]
    assert focus_pair_indices(src, trg, ["A", "B"], ["A=1"]).tolist() == []
    assert focus_pair_indices(src, trg, ["A", "B"], ["A", "B"]).tolist() == [1, 2, 4, 5, 7]
    with pytest.raises(ConfigError, match="data.pair_focus: unknown attribute 'C'"):
        focus_pair_indices(src, trg, ["A", "B"], ["C"])
    with pytest.raises(ConfigError, match="0 or 1"):
        focus_pair_indices(src, trg, ["A", "B"], ["A=yes"])
    sampler = FocusedSampler(10, focus_pair_indices(src, trg, ["A", "B"], ["A=0"]), 0.5, seed=3)
    for _ in range(5):
        batch = sampler.next(8)
        assert len(batch) == 8 and set(batch[:4].tolist()) <= {1, 4, 7}
    state = sampler.state_dict()
    again = FocusedSampler(10, torch.tensor([1, 4, 7]), 0.5, seed=99)
    again.load_state_dict(state)
    assert torch.equal(again.next(8), sampler.next(8))
    with pytest.raises(ConfigError, match="selects no pair"):
        FocusedSampler(10, torch.tensor([], dtype=torch.long), 0.5, seed=0)


def test_every_training_config_key_is_documented():
    from dataclasses import fields

    from starcli.train import TrainConfig

    text = (Path(__file__).parents[1] / "docs" / "training.md").read_text()
    keys = [f"{sec.name}.{f.name}" for sec in fields(TrainConfig) for f in fields(sec.default_factory())]
    assert len(keys) > 50 and [k for k in keys if f"`{k}`" not in text] == []


def test_gradient_penalty_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    d = Discriminator(DiscriminatorConfig(image_size=16, conv_dim=8, c_dim=3, repeat_num=2))
    x, y = torch.rand(2, 3, 16, 16) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1
    a = torch.rand(2, 1, 1, 1)
    ref = gradient_penalty(d, x, y, a)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        gp = gradient_penalty(d, x, y, a, fp32=True)
    assert gp.dtype == torch.float32
    torch.testing.assert_close(gp, ref)
    gp.backward()
    assert all(p.grad is not None for n, p in d.named_parameters() if not n.startswith("conv2"))


# ------------------------------------------------------------------------------ config


def test_config_errors_name_the_dotted_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[optim]\nlearning_rate = 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'optim\.learning_rate'"):
        load_train_config(bad)
    bad.write_text("[run]\nbatch_size = 'big'\n")
    with pytest.raises(ConfigError, match=r"'run\.batch_size': expected int"):
        load_train_config(bad)
    bad.write_text("[nope]\nx = 1\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'nope'"):
        load_train_config(bad)
    with pytest.raises(ConfigError, match=r"'run\.precision'"):
        load_train_config(overrides={"run.precision": "fp8"})
    with pytest.raises(ConfigError, match=r"'model\.d_repeat_num'"):
        load_train_config(overrides={"data.image_size": 20, "model.d_repeat_num": 3})


def test_config_toml_round_trip_and_precedence(tmp_path):
    cfg = load_train_config(overrides={"data.attrs": "A,B", "loss.lambda_pair": 10, "data.groups": [["A", "B"]]})
    assert cfg.data.attrs == ["A", "B"] and cfg.loss.lambda_pair == 10.0
    f = tmp_path / "c.toml"
    f.write_text(config_to_toml(cfg))
    again = load_train_config(f)
    assert again == cfg
    flags = load_train_config(f, {"run.batch_size": 3, "run.seed": None})
    assert flags.run.batch_size == 3 and flags.run.seed == cfg.run.seed


def test_recipe_loads():
    recipe = Path(__file__).parents[1] / "starcli" / "assets" / "recipes" / "synth-64.toml"
    cfg = load_train_config(recipe)
    assert cfg.data.image_size == 64 and cfg.loss.lambda_pair > 0
    assert cfg.model.g_conv_dim == 32 and cfg.model.g_repeat_num == 4
    g = Generator(GeneratorConfig(conv_dim=32, c_dim=9, repeat_num=4))
    assert 1.3e6 < sum(p.numel() for p in g.parameters()) < 1.7e6


RECIPES = sorted((Path(__file__).parents[1] / "starcli" / "assets" / "recipes").glob("*.toml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_every_recipe_is_a_valid_config(recipe):
    """Each stage's recipe loads and validates (stage files given with --resume are partial)."""
    cfg = load_train_config(recipe)
    assert cfg.data.image_size == 64 or "[data]" not in recipe.read_text()


def test_stage6_recipe_oversamples_the_pairs_that_add_age_cues():
    cfg = load_train_config(RECIPES[0].with_name("synth-64-stage6.toml"))
    assert cfg.data.pair_focus == ["Young=0"] and 0 < cfg.data.pair_focus_share < 1
    assert cfg.loss.lambda_pair_shift > 0 and cfg.model.g_detail_dim == 32


# ------------------------------------------------------------------------------ training


def _weights(run: Path) -> dict[str, torch.Tensor]:
    state = torch.load(sorted((run / "checkpoints").glob("step_*"))[-1] / "train_state.pt", weights_only=True)
    out = {}
    for name in ("G", "D", "G_ema", "PC"):  # PC: the pair patch critic, when the run has one
        out.update({f"{name}.{k}": v for k, v in state.get(name, {}).items()})
    return out


def test_init_grows_a_detail_head_from_the_models_exact_output(dataset, tmp_path):
    """model.g_detail_dim with run.init from a model without the head: the shared weights are the
    model's, the head starts at zero, so the fine-tuned run's output is the model's output; the
    head is in the card and loads back. A model with a head cannot be loaded without one."""
    from starcli.models import load

    train(tiny_config(dataset, tmp_path / "base", optim__iters=2, log__sample_every=100))
    base = load(tmp_path / "base")
    train(tiny_config(dataset, tmp_path / "grown", optim__iters=1, optim__g_lr=0.0, optim__d_lr=0.0,
                      model__g_detail_dim=4, run__init=str(tmp_path / "base"), log__sample_every=100))
    grown = load(tmp_path / "grown")
    assert grown.generator.config.detail_dim == 4 and grown.generator.detail is not None
    assert json.loads((tmp_path / "grown" / "model.json").read_text())["generator"]["detail_dim"] == 4
    torch.manual_seed(0)
    x, c = torch.rand(3, 3, 16, 16) * 2 - 1, (torch.rand(3, len(ATTRS)) > 0.5).float()
    with torch.no_grad():
        torch.testing.assert_close(grown.generator.eval()(x, c), base.generator.eval()(x, c), rtol=0, atol=1e-6)
    with pytest.raises(ConfigError, match="run.init"):
        train(tiny_config(dataset, tmp_path / "shrunk", optim__iters=1, run__init=str(tmp_path / "grown")))


def test_train_writes_bundle_checkpoints_samples(dataset, tmp_path):
    out = tmp_path / "run"
    steps = []
    cfg = tiny_config(dataset, out, optim__iters=4, run__save_every=2, run__keep_last=1, log__sample_every=2, loss__lambda_pair=10.0,
                      loss__lambda_pair_region=5.0)
    summary = train(cfg, on_step=steps.append)
    assert [s.step for s in steps] == [1, 2, 3, 4]
    assert "G/pair" in summary.losses and "G/pair_region" in summary.losses and summary.num_pairs == 8
    assert steps[-1].lr == 0.0
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert ckpts == ["step_0000004"]  # keep_last 1, no temp folders left
    card = json.loads((out / "model.json").read_text())
    assert card["format"] == "starcli-model/1"
    assert card["attributes"] == ATTRS and card["groups"] == [ATTRS[:3]]
    assert card["image_size"] == 16 and card["generator"] == {"conv_dim": 8, "c_dim": 4, "repeat_num": 1}
    from starcli.align import CELEBA_TEMPLATE

    assert card["template"]["points"]["nose"] == list(CELEBA_TEMPLATE["nose"])
    assert sum(card["default_source"][a] for a in ATTRS[:3]) == 1
    from starcli.models import load

    model = load(out)  # the run folder and its checkpoints are bundles
    assert model.spec.attributes == ATTRS and model.discriminator is not None
    assert load(out / "checkpoints" / "step_0000004").spec.provenance["step"] == 4
    g = Generator(GeneratorConfig(**card["generator"]))
    g.load_state_dict(load_file(out / "generator.safetensors"), strict=True)
    d = Discriminator(DiscriminatorConfig(**card["discriminator"]))
    d.load_state_dict(load_file(out / "checkpoints" / "step_0000004" / "discriminator.safetensors"), strict=True)
    state = torch.load(out / "checkpoints" / "step_0000004" / "train_state.pt", weights_only=True)
    assert state["step"] == 4 and state["config"]["run"]["batch_size"] == 4
    assert (out / "config.toml").is_file() and (out / "samples" / "step_0000004.png").is_file()
    assert "step 4" in (out / "train.log").read_text()


@pytest.mark.parametrize("precision, focus", [("fp32", False), ("bf16", False), ("fp32", True)])
def test_resume_matches_uninterrupted_run(dataset, tmp_path, precision, focus):
    common = dict(optim__iters=6, optim__decay_iters=4, run__save_every=4, loss__lambda_pair=5.0,
                  augment__affine=0.5, augment__color=0.5, log__sample_every=100, run__precision=precision)
    if focus:  # oversampled pairs and the shift-tolerant paired loss resume exactly too
        common.update(data__pair_focus=["Smiling"], data__pair_focus_share=0.5, loss__lambda_pair_shift=2.0, loss__lambda_pair_texture=2.0,
                      loss__lambda_pair_critic=1.0, loss__pair_critic_dim=4, loss__pair_critic_lr=3e-4)
    train(tiny_config(dataset, tmp_path / "full", **common))
    first = train(tiny_config(dataset, tmp_path / "part", **common, run__max_steps=3))  # interrupted
    assert first.step == 3 and first.checkpoint.name == "step_0000003"
    if focus:  # the pair critic's own lr, on the shared schedule
        opt_pc = torch.load(first.checkpoint / "train_state.pt", weights_only=True)["opt_PC"]
        assert opt_pc["param_groups"][0]["lr"] == pytest.approx(3e-4 * lr_factor(3, 6, 4))
    resumed = tiny_config(dataset, tmp_path / "part", **{**common, "run__resume": str(tmp_path / "part")})
    summary = train(resumed)
    assert summary.start_step == 3 and summary.step == 6
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "part")
    assert a.keys() == b.keys()
    assert any(k.startswith("PC.") for k in a) == focus  # the pair patch critic resumes exactly too
    assert ("D/pair_critic" in summary.losses and "G/pair_critic" in summary.losses) == focus
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_pair_critic_term_reaches_the_generator(dataset, tmp_path):
    """Same seed, same critic, only the critic's G weight differs: the generator must come out
    different (the term is in G's loss), and identical when the weight is the same."""
    common = dict(optim__iters=2, optim__n_critic=1, loss__lambda_pair=5.0, loss__pair_critic_dim=4, log__sample_every=100)
    runs = {name: tmp_path / name for name in ("a", "b", "c")}
    for name, weight in (("a", 1.0), ("b", 1.0), ("c", 3.0)):
        train(tiny_config(dataset, runs[name], **common, loss__lambda_pair_critic=weight))
    a, b, c = (_weights(runs[n]) for n in ("a", "b", "c"))
    g_keys = [k for k in a if k.startswith("G.")]
    assert all(torch.equal(a[k], b[k]) for k in g_keys)
    assert not all(torch.equal(a[k], c[k]) for k in g_keys)


def test_time_budget_stops_and_checkpoints(dataset, tmp_path):
    cfg = tiny_config(dataset, tmp_path / "budget", optim__iters=50, run__max_minutes=1e-6, log__sample_every=100)
    summary = train(cfg)
    assert summary.step == 1 and summary.checkpoint.name == "step_0000001"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_cuda_amp(dataset, tmp_path, precision):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("GPU without bf16")
    cfg = tiny_config(dataset, tmp_path / "cuda", optim__iters=2, run__device="cuda", run__precision=precision,
                      loss__lambda_pair=5.0)
    summary = train(cfg)
    assert summary.device.startswith("cuda") and summary.precision == precision
    assert all(torch.isfinite(torch.tensor(v)) for v in summary.losses.values())


def test_fp16_needs_cuda(dataset, tmp_path):
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        train(tiny_config(dataset, tmp_path / "x", optim__iters=1, run__device="cpu", run__precision="fp16"))


def test_init_starts_from_a_models_weights(dataset, tmp_path):
    """run.init (fine-tuning): the run starts from the model's G and D, with fresh optimisers;
    a model with other attributes or another architecture is refused with the key named."""
    from starcli.models import load

    train(tiny_config(dataset, tmp_path / "base", optim__iters=2, log__sample_every=100))
    base = load(tmp_path / "base")
    frozen = tiny_config(dataset, tmp_path / "ft", optim__iters=1, optim__g_lr=0.0, optim__d_lr=0.0,
                         run__init=str(tmp_path / "base"), log__sample_every=100)
    summary = train(frozen)
    assert summary.start_step == 0 and summary.step == 1
    state = _weights(tmp_path / "ft")
    for k, v in base.generator.named_parameters():  # (InstanceNorm running stats move with lr 0)
        assert torch.equal(state[f"G.{k}"], v) and torch.equal(state[f"G_ema.{k}"], v), k
    for k, v in base.discriminator.named_parameters():
        assert torch.equal(state[f"D.{k}"], v), k
    card = json.loads((tmp_path / "ft" / "model.json").read_text())
    assert card["provenance"]["init"] == str(tmp_path / "base")

    with pytest.raises(ConfigError, match="run.init"):
        train(tiny_config(dataset, tmp_path / "wide", optim__iters=1, model__g_conv_dim=16, run__init=str(tmp_path / "base")))
    with pytest.raises(ConfigError, match="run.init"):
        train(tiny_config(dataset, tmp_path / "attrs", optim__iters=1, data__attrs=ATTRS[:2], run__init=str(tmp_path / "base")))
    with pytest.raises(ConfigError, match="run.init"):
        train(tiny_config(dataset, tmp_path / "none", optim__iters=1, run__init=str(tmp_path / "missing")))
