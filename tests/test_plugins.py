"""Entry-point plugins: discovery, unknown names, broken plugins, `auto` choice, CLI listing."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from starcli import plugins
from starcli.backends import backend_class, make_backend
from starcli.cli import app
from starcli.errors import PluginError
from starcli.models import StarganModel
from starcli.spec import ModelSpec
from starcli.stargan import Generator, GeneratorConfig


@pytest.fixture
def fake_plugins():
    plugins.register(plugins.BACKENDS, "fastfake", "tests.plugin_fakes:FastFakeBackend")
    plugins.register(plugins.BACKENDS, "nogpu", "tests.plugin_fakes:UnavailableBackend")
    plugins.register(plugins.BACKENDS, "broken", "tests.broken_plugin:Backend")
    yield
    for name in ("fastfake", "nogpu", "broken"):
        plugins.unregister(plugins.BACKENDS, name)


def _tiny_model() -> StarganModel:
    torch.manual_seed(0)
    config = GeneratorConfig(conv_dim=8, c_dim=2, repeat_num=1)
    return StarganModel(ModelSpec("tiny", ["Male", "Young"], 16, config), Generator(config).eval())


def test_first_party_plugins_are_declared_as_entry_points():
    backends = plugins.entry_points_of(plugins.BACKENDS)
    assert backends["cpu"].value == "starcli_torch.cpu:CpuBackend"
    assert "cuda" in backends
    assert "dlib" in plugins.entry_points_of(plugins.DETECTORS)


def test_unknown_plugin_lists_installed_names():
    with pytest.raises(PluginError, match=r"unknown backend 'tpu': installed backends are .*cpu.*cuda"):
        plugins.get(plugins.BACKENDS, "tpu")


def test_broken_plugin_is_reported_not_raised(fake_plugins):
    infos = {i.name: i for i in plugins.list_plugins()}
    assert not infos["broken"].loaded and "needs a library" in infos["broken"].reason
    assert infos["cpu"].available
    with pytest.raises(PluginError, match="failed to import"):
        plugins.get(plugins.BACKENDS, "broken")


def test_auto_picks_fastest_available_and_forcing_unavailable_fails(fake_plugins):
    assert backend_class("auto").name == "fastfake"  # nogpu has higher priority but cannot run
    with pytest.raises(PluginError, match="cannot run here: needs a device"):
        backend_class("nogpu")


def test_cuda_backend_is_skipped_cleanly_without_gpu():
    cls = plugins.get(plugins.BACKENDS, "cuda")
    ok, reason = cls.available()
    assert ok == torch.cuda.is_available()
    if not ok:
        assert "no CUDA device" in reason


def test_cpu_backend_translates_in_unit_range_and_matches_generator():
    model = _tiny_model()
    backend = make_backend("cpu", model, {"precision": "fp32", "batch_size": 3})
    crops = torch.rand(5, 3, 16, 16)
    labels = torch.tensor([[1.0, 0.0]] * 5)
    out = backend.translate(crops, labels)
    with torch.no_grad():
        expected = (model.generator(crops * 2 - 1, labels) + 1) / 2
    assert out.shape == crops.shape and out.min() >= 0 and out.max() <= 1
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_backend_rejects_unknown_options():
    with pytest.raises(PluginError, match="unknown options speed"):
        make_backend("cpu", _tiny_model(), {"speed": "max"})


def test_plugins_command_lists_availability(fake_plugins):
    result = CliRunner().invoke(app, ["plugins"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    assert "cpu" in result.output and "available" in result.output
    assert "broken" in result.output and "import failed" in result.output
