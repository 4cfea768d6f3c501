"""Golden tests: starcli's StarGAN classes reproduce the official StarGAN v1 code.

Fixtures in ``tests/data/stargan_v1_ref/`` were made with the official code (commit 94dd002e, see
its README).  Tolerance: 1e-5 absolute (the official classes are bit-exact on this CPU; another
CPU or BLAS may round differently).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from starcli import models
from starcli.errors import ModelError
from starcli.stargan import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig, InstanceNorm

REF = Path(__file__).parent / "data" / "stargan_v1_ref"
ATTRS = ["Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young"]
TOL = dict(rtol=0.0, atol=1e-5)


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("STARCLI_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def inputs() -> dict:
    return torch.load(REF / "input.pt", weights_only=True)


@pytest.fixture(scope="module")
def expected() -> dict:
    return torch.load(REF / "expected.pt", weights_only=True)


@pytest.fixture()
def model() -> models.StarganModel:
    return models.load(REF / "100-G.ckpt", attributes=ATTRS)


def _grid(generator: torch.nn.Module, x: torch.Tensor, c_trg_list: torch.Tensor) -> torch.Tensor:
    """The official test grid: the input, then G(x, c) for each target row, along the width."""
    with torch.no_grad():
        return torch.cat([x] + [generator(x, row.view(1, -1)) for row in c_trg_list], dim=3)


def _use_running_stats(generator: torch.nn.Module) -> None:
    for module in generator.modules():
        if isinstance(module, InstanceNorm):
            module.per_image_stats = False


def test_fixture_checkpoints_load_strictly(model):
    assert isinstance(model.generator, Generator) and isinstance(model.discriminator, Discriminator)
    assert model.generator.config == GeneratorConfig(conv_dim=16, c_dim=5, repeat_num=2)
    assert model.discriminator.config == DiscriminatorConfig(image_size=128, conv_dim=16, c_dim=5, repeat_num=2)
    raw = torch.load(REF / "100-G.ckpt", weights_only=True)
    assert list(model.generator.state_dict()) == list(raw), "same keys in the same order"
    fresh = Generator(model.generator.config)
    fresh.load_state_dict(raw, strict=True)
    for key, value in raw.items():
        torch.testing.assert_close(model.generator.state_dict()[key], value, rtol=0, atol=0)
    assert model.spec.attributes == ATTRS


def test_y_train_per_image_statistics(model, inputs, expected):
    """starcli's eval behaviour (per-image InstanceNorm) is the official released output."""
    assert not model.generator.training
    with torch.no_grad():
        y = model.generator(inputs["x"], inputs["c"])
    torch.testing.assert_close(y, expected["y_train"], **TOL)


def test_grid_train(model, inputs, expected):
    grid = _grid(model.generator, inputs["x"], inputs["c_trg_list"])
    assert grid.shape == (1, 3, 128, 768)
    torch.testing.assert_close(grid, expected["grid_train"], **TOL)


def test_eval_with_running_statistics(model, inputs, expected):
    _use_running_stats(model.generator)
    with torch.no_grad():
        y = model.generator(inputs["x"], inputs["c"])
    torch.testing.assert_close(y, expected["y_eval"], **TOL)
    torch.testing.assert_close(_grid(model.generator, inputs["x"], inputs["c_trg_list"]), expected["grid_eval"], **TOL)
    assert (y - expected["y_train"]).abs().max().item() == pytest.approx(expected["max_abs_diff_train_vs_eval"], abs=1e-5)


def test_eval_forward_leaves_buffers_alone(model, inputs):
    before = {k: v.clone() for k, v in model.generator.state_dict().items()}
    with torch.no_grad():
        model.generator(inputs["x"], inputs["c"])
    for key, value in model.generator.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


def test_buffers_after_one_train_forward(model, inputs, expected):
    model.generator.train()
    with torch.no_grad():
        y = model.generator(inputs["x"], inputs["c"])
    torch.testing.assert_close(y, expected["y_train"], **TOL)
    norm = model.generator.main[1]
    prefix = "after_one_train_forward_main.1."
    torch.testing.assert_close(norm.running_mean, expected[prefix + "running_mean"], **TOL)
    torch.testing.assert_close(norm.running_var, expected[prefix + "running_var"], **TOL)
    # InstanceNorm never counts batches: num_batches_tracked stays as stored (0).
    assert int(norm.num_batches_tracked) == int(expected[prefix + "num_batches_tracked"]) == 0


def test_discriminator_outputs(model, inputs):
    ref = torch.load(REF / "ref_D.pt", weights_only=True)
    with torch.no_grad():
        out_src, out_cls = model.discriminator(inputs["x"])
    assert out_src.shape == (1, 1, 32, 32) and out_cls.shape == (1, 5)
    torch.testing.assert_close(out_src, ref["out_src"], **TOL)
    torch.testing.assert_close(out_cls, ref["out_cls"], **TOL)


def test_default_config_keys_and_shapes_match_official():
    ref = json.loads((REF / "keys_default.json").read_text())
    for name, module in (("G", Generator(GeneratorConfig())), ("D", Discriminator(DiscriminatorConfig()))):
        state = module.state_dict()
        got = [{"key": k, "shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")} for k, v in state.items()]
        assert got == ref[name]
        assert len(state) == int(ref[f"{name}_num_keys"])
        assert sum(p.numel() for p in module.parameters()) == int(ref[f"{name}_num_parameters"])
    assert int(ref["G_num_keys"]) == 103 and int(ref["G_num_parameters"]) == 8_430_528
    assert int(ref["D_num_keys"]) == 14 and int(ref["D_num_parameters"]) == 44_762_048


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda g: setattr(g.main[0], "padding", (2, 2)), id="padding-7x7"),
        pytest.param(lambda g: setattr(g.main[3], "padding", (0, 0)), id="padding-down"),
        pytest.param(lambda g: setattr(g.main[1], "eps", 1e-3), id="norm-eps"),
        pytest.param(_use_running_stats, id="norm-running-stats"),
        pytest.param(lambda g: g.main[9].main.__setitem__(2, torch.nn.LeakyReLU(0.2)), id="activation"),
        pytest.param(lambda g: g.main.__setitem__(-1, torch.nn.Hardtanh()), id="output-tanh"),
        pytest.param(lambda g: g.main[9].main.__delitem__(4), id="drop-residual-norm"),
    ],
)
def test_golden_output_detects_architecture_changes(model, inputs, expected, mutate):
    """The exact comparison above fails when a layer, padding or norm setting changes."""
    mutate(model.generator)
    try:
        with torch.no_grad():
            y = model.generator(inputs["x"], inputs["c"])
    except RuntimeError:
        return  # a shape change that no longer even runs
    assert y.shape != expected["y_train"].shape or (y - expected["y_train"]).abs().max().item() > 1e-3


def test_pytorch03_checkpoint_without_num_batches_tracked_loads(tmp_path, inputs, expected):
    raw = torch.load(REF / "100-G.ckpt", weights_only=True)
    old = {k: v for k, v in raw.items() if not k.endswith("num_batches_tracked")}
    assert len(old) < len(raw)
    torch.save(old, tmp_path / "100-G.ckpt")
    model = models.load(tmp_path / "100-G.ckpt", attributes=ATTRS)
    with torch.no_grad():
        torch.testing.assert_close(model.generator(inputs["x"], inputs["c"]), expected["y_train"], **TOL)


def test_official_checkpoint_to_bundle_to_load_is_identical(tmp_path, model, inputs):
    folder = models.save_bundle(model, tmp_path / "ref-bundle")
    bundle = models.load(folder)
    assert bundle.spec.attributes == ATTRS
    with torch.no_grad():
        torch.testing.assert_close(bundle.generator(inputs["x"], inputs["c"]), model.generator(inputs["x"], inputs["c"]), rtol=0, atol=0)
        for a, b in zip(bundle.discriminator(inputs["x"]), model.discriminator(inputs["x"])):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    for key, value in model.generator.state_dict().items():
        torch.testing.assert_close(bundle.generator.state_dict()[key], value, rtol=0, atol=0)


def _wrong_shape(path: Path) -> None:
    raw = torch.load(REF / "100-G.ckpt", weights_only=True)
    raw["main.3.weight"] = torch.zeros(32, 16, 3, 3)
    torch.save(raw, path)


def _truncated(path: Path) -> None:
    data = (REF / "100-G.ckpt").read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _not_a_checkpoint(path: Path) -> None:
    path.write_text("this is a text file, not a checkpoint\n")


@pytest.mark.parametrize("make", [_wrong_shape, _truncated, _not_a_checkpoint], ids=["wrong-shape", "truncated", "not-a-checkpoint"])
def test_bad_checkpoints_give_one_line_model_error_naming_the_file(tmp_path, make):
    path = tmp_path / "100-G.ckpt"
    make(path)
    with pytest.raises(ModelError) as info:
        models.load(path, attributes=ATTRS, with_discriminator=False)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message


def test_sibling_discriminator_is_optional(tmp_path, inputs, expected):
    shutil.copy(REF / "100-G.ckpt", tmp_path / "100-G.ckpt")
    model = models.load(tmp_path / "100-G.ckpt", attributes=ATTRS)
    assert model.discriminator is None
    with torch.no_grad():
        torch.testing.assert_close(model.generator(inputs["x"], inputs["c"]), expected["y_train"], **TOL)
