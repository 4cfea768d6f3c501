"""Shared fixtures: isolated STARCLI_HOME, a tiny StarGAN bundle, test plugins (tests/fakes.py)."""

from __future__ import annotations

import os
from pathlib import Path

# Before torch loads: idle OpenMP threads sleep instead of spinning (as `starcli translate` does);
# on shared 2-core machines this makes torch tests several times faster.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

DATA = Path(__file__).parent / "data"


@pytest.fixture(autouse=True)
def _starcli_home(tmp_path_factory, monkeypatch):
    """Every test gets its own empty model store; no STARCLI_MODEL leaks in."""
    monkeypatch.setenv("STARCLI_HOME", str(tmp_path_factory.mktemp("starcli_home")))
    monkeypatch.delenv("STARCLI_MODEL", raising=False)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random tiny StarGAN bundle (conv_dim 8, 1 residual block, 32 px, with a critic) on
    CelebA's 5 attributes; pass it as ``--model``."""
    from starcli.models import StarganModel, save_bundle
    from starcli.spec import ModelSpec, default_groups
    from starcli.stargan import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig

    attrs = ["Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young"]
    torch.manual_seed(0)
    g = GeneratorConfig(conv_dim=8, c_dim=5, repeat_num=1)
    d = DiscriminatorConfig(image_size=32, conv_dim=8, c_dim=5, repeat_num=2)
    spec = ModelSpec("tiny", attrs, 32, g, d, groups=default_groups(attrs),
                     default_source={"Brown_Hair": 1, "Young": 1})
    model = StarganModel(spec, Generator(g).eval(), Discriminator(d).eval())
    return save_bundle(model, tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture
def test_plugins():
    """Registers ``identity`` (backend) and ``fake`` (detector) from tests/fakes.py."""
    from starcli import plugins

    plugins.register(plugins.BACKENDS, "identity", "tests.fakes:IdentityBackend")
    plugins.register(plugins.DETECTORS, "fake", "tests.fakes:FakeDetector")
    yield
    plugins.unregister(plugins.BACKENDS, "identity")
    plugins.unregister(plugins.DETECTORS, "fake")

