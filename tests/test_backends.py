"""Generator backends: Backend semantics, ONNX export + cache, and each fast path's accuracy bound.

Accuracy bound of every fast path (docs/performance.md): PSNR >= 40 dB against torch fp32 on
real face crops (tests/data photos), both through a default-size random-init generator (conv_dim
64, 6 residual blocks, 128x128) and the official-code fixture generator.  fp32 engines (ONNX
Runtime, OpenVINO fp32) must match torch fp32 within 1e-4.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from starcli import backends, export, models
from starcli.errors import ModelError, PluginError
from starcli.models import StarganModel, load
from starcli.spec import ModelSpec
from starcli.stargan import Generator, GeneratorConfig, InstanceNorm
from starcli_torch.cpu import CpuBackend, native_bf16
from starcli_torch.cuda import CudaBackend

DATA = Path(__file__).parent / "data"
REF = DATA / "stargan_v1_ref"
ATTRS = ["Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young"]
HAS_ORT = importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None
HAS_OV = importlib.util.find_spec("openvino") is not None and importlib.util.find_spec("onnx") is not None
HAS_CUDA = torch.cuda.is_available()
needs_ort = pytest.mark.skipif(not HAS_ORT, reason="onnxruntime/onnx not installed (pip install 'starcli[onnx]')")
needs_ov = pytest.mark.skipif(not HAS_OV, reason="openvino/onnx not installed (pip install 'starcli[openvino]')")
needs_bf16 = pytest.mark.skipif(not native_bf16(), reason="CPU has no native bf16")
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device")


def _ov_has(capability: str) -> bool:
    if not HAS_OV:
        return False
    from starcli_openvino.backend import cpu_capabilities

    return capability in cpu_capabilities()


needs_ov_fp16 = pytest.mark.skipif(not _ov_has("FP16"), reason="OpenVINO CPU without native fp16")
EMBEDDED = models.EMBEDDED_DIR / models.DEFAULT_MODEL

#: Photos and the face box (left, top, right, bottom) used as crops.  FairFace files are crops
#: with padding 1.25 around the face: their centre square is the face.
PHOTOS = {
    "astronaut.png": (140, 20, 340, 220),
    "grace_hopper.jpg": (120, 60, 400, 340),
    "fairface_0001.jpg": (90, 90, 358, 358),
    "fairface_0002.jpg": (90, 90, 358, 358),
    "fairface_0006.jpg": (90, 90, 358, 358),
    "fairface_0016.jpg": (90, 90, 358, 358),
}


def face_crops(size: int) -> torch.Tensor:
    """``(N, 3, size, size)`` float32 [0, 1] face crops from the photos in tests/data."""
    crops = []
    for name, box in PHOTOS.items():
        path = DATA / name
        if path.is_file():
            image = Image.open(path).convert("RGB").crop(box).resize((size, size), Image.Resampling.LANCZOS)
            crops.append(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255.0)
    assert len(crops) >= 2, "tests/data photos are missing"
    return torch.stack(crops)


def target_labels(n: int, c_dim: int = 5) -> torch.Tensor:
    """``(n, c_dim)`` 0/1 target labels (CelebA-style rows for 5 labels, seeded random otherwise)."""
    if c_dim != 5:
        return (torch.rand(n, c_dim, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    rows = torch.tensor([[1, 0, 0, 1, 1], [0, 1, 0, 0, 1], [0, 0, 1, 1, 0], [1, 0, 0, 0, 0], [0, 1, 0, 1, 1]], dtype=torch.float32)
    return rows[torch.arange(n) % len(rows)]


def psnr(test: torch.Tensor, ref: torch.Tensor) -> float:
    """PSNR in dB of [0, 1] images (peak 1)."""
    mse = torch.mean((test.double() - ref.double()) ** 2).item()
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


def make_model(config: GeneratorConfig, image_size: int, seed: int = 0) -> StarganModel:
    torch.manual_seed(seed)
    generator = Generator(config).eval().requires_grad_(False)
    spec = ModelSpec(name="test", attributes=ATTRS[: config.c_dim], image_size=image_size, generator=config)
    return StarganModel(spec, generator)


def fp32_reference(model: StarganModel, crops: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Official-style fp32 eager generator output in [0, 1]."""
    with torch.no_grad():
        return ((model.generator(crops * 2 - 1, labels) + 1) / 2).clamp(0, 1)


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("starcli-home")


@pytest.fixture(autouse=True)
def _home(home, monkeypatch):
    monkeypatch.setenv("STARCLI_HOME", str(home))


@pytest.fixture()
def tiny() -> StarganModel:
    return make_model(GeneratorConfig(conv_dim=8, c_dim=5, repeat_num=1), 32)


@pytest.fixture(scope="module")
def default_model() -> StarganModel:
    """Default-size generator (conv_dim 64, 6 residual blocks), random init, 128x128."""
    return make_model(GeneratorConfig(), 128)


@pytest.fixture(scope="module")
def golden_model() -> StarganModel:
    return load(REF / "100-G.ckpt", attributes=ATTRS, with_discriminator=False)


# ----------------------------------------------------------------------------------------------
# Every backend that can run here: (class, options, fp32 tolerance or None for a PSNR bound)
# ----------------------------------------------------------------------------------------------

CASES = [
    pytest.param(CpuBackend, {"precision": "fp32"}, 1e-5, id="cpu-fp32"),
    pytest.param(CpuBackend, {"precision": "bf16"}, None, id="cpu-bf16", marks=needs_bf16),
    pytest.param("onnx", {}, 1e-4, id="onnx-fp32", marks=needs_ort),
    pytest.param("openvino", {"precision": "fp32"}, 1e-4, id="openvino-fp32", marks=needs_ov),
    pytest.param("openvino", {"precision": "bf16"}, None, id="openvino-bf16", marks=[needs_ov, needs_bf16]),
    pytest.param("openvino", {"precision": "fp16"}, None, id="openvino-fp16", marks=[needs_ov, needs_ov_fp16]),
]


def backend_cls(which):
    if which == "onnx":
        from starcli_onnx.backend import OnnxBackend

        return OnnxBackend
    if which == "openvino":
        from starcli_openvino.backend import OpenVinoBackend

        return OpenVinoBackend
    if which == "cpu":
        from starcli_torch.cpu import CpuBackend

        return CpuBackend
    return which


@pytest.mark.parametrize("which, options, tol", CASES)
def test_backend_semantics(tiny, which, options, tol):
    """Shapes, range, dtype, chunking, empty input, inputs left untouched."""
    cls = backend_cls(which)
    backend = cls.from_config(tiny, {**options, "batch_size": 2})
    assert isinstance(backend, backends.Backend)
    torch.manual_seed(3)
    crops = torch.rand(5, 3, 32, 32)
    labels = target_labels(5)
    before = crops.clone()
    out = backend.translate(crops, labels)
    assert out.shape == crops.shape and out.dtype == torch.float32 and out.device.type == "cpu"
    assert out.min() >= 0 and out.max() <= 1
    torch.testing.assert_close(crops, before, rtol=0, atol=0)
    # chunking (5 crops, batch 2) gives what one crop at a time gives
    single = torch.cat([backend.translate(crops[i : i + 1], labels[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(out, single, rtol=0, atol=2e-3 if tol is None else 1e-5)
    # a call larger than the batch size on several streams / chunks, then a small one again
    big = backend.translate(crops.repeat(3, 1, 1, 1), labels.repeat(3, 1))
    torch.testing.assert_close(big[:5], out, rtol=0, atol=2e-3 if tol is None else 1e-5)
    empty = backend.translate(crops[:0], labels[:0])
    assert empty.shape == (0, 3, 32, 32)
    ref = fp32_reference(tiny, crops, labels)
    if tol is not None:
        torch.testing.assert_close(out, ref, rtol=0, atol=tol)


@pytest.mark.parametrize("which, options, tol", CASES)
def test_backends_run_the_generator_detail_head(which, options, tol):
    """A generator with a (non-zero) detail head: every backend gives the torch fp32 output, which
    differs from the same generator without the head."""
    model = make_model(GeneratorConfig(conv_dim=8, c_dim=5, repeat_num=1, detail_dim=4), 32)
    torch.manual_seed(5)
    for p in model.generator.detail[-1].parameters():
        p.normal_(0, 0.3)
    crops, labels = torch.rand(3, 3, 32, 32), target_labels(3)
    ref = fp32_reference(model, crops, labels)
    headless = make_model(GeneratorConfig(conv_dim=8, c_dim=5, repeat_num=1), 32)
    headless.generator.load_state_dict(model.generator.state_dict(), strict=False)
    assert (fp32_reference(headless, crops, labels) - ref).abs().mean() > 0.01
    out = backend_cls(which).from_config(model, options).translate(crops, labels)
    if tol is None:
        assert psnr(out, ref) >= 40.0
    else:
        torch.testing.assert_close(out, ref, rtol=0, atol=tol)


@pytest.fixture(scope="module")
def default_reference(default_model):
    crops = face_crops(128)
    labels = target_labels(len(crops))
    return crops, labels, fp32_reference(default_model, crops, labels)


slow = pytest.mark.slow
DEFAULT_SIZE_CASES = [
    pytest.param(CpuBackend, {"precision": "bf16"}, None, id="cpu-bf16", marks=needs_bf16),
    pytest.param("openvino", {"precision": "bf16"}, None, id="openvino-bf16", marks=[needs_ov, needs_bf16]),
    pytest.param("onnx", {}, 1e-4, id="onnx-fp32", marks=[needs_ort, slow]),
    pytest.param("openvino", {"precision": "fp32"}, 1e-4, id="openvino-fp32", marks=[needs_ov, slow]),
]


@pytest.mark.parametrize("which, options, tol", DEFAULT_SIZE_CASES)
def test_accuracy_bound_on_real_face_crops_default_size(default_model, default_reference, which, options, tol):
    """Each fast path: PSNR >= 40 dB vs torch fp32 through a default-size generator."""
    crops, labels, ref = default_reference
    assert ref.std() > 0.05, "reference output must span a real range for PSNR to mean something"
    out = backend_cls(which).from_config(default_model, options).translate(crops, labels)
    assert psnr(out, ref) >= 40.0
    if tol is not None:
        torch.testing.assert_close(out, ref, rtol=0, atol=tol)


@pytest.mark.parametrize("which, options, tol", CASES)
def test_accuracy_bound_on_real_face_crops_official_fixture(golden_model, which, options, tol):
    """Same bound through the official-code fixture generator (conv_dim 16, 128x128)."""
    crops = face_crops(128)
    labels = target_labels(len(crops))
    ref = fp32_reference(golden_model, crops, labels)
    out = backend_cls(which).from_config(golden_model, options).translate(crops, labels)
    assert psnr(out, ref) >= 40.0
    if tol is not None:
        torch.testing.assert_close(out, ref, rtol=0, atol=tol)


@pytest.mark.skipif(not (EMBEDDED / "model.json").is_file(), reason="no embedded trained model in this checkout")
@pytest.mark.parametrize("which, options, tol", CASES)
def test_accuracy_bound_on_real_face_crops_trained_model(which, options, tol):
    """Same bound through the embedded trained model (its output range is a trained one)."""
    model = load(EMBEDDED, with_discriminator=False)
    crops = face_crops(model.spec.image_size)
    labels = target_labels(len(crops), model.generator.config.c_dim)
    ref = fp32_reference(model, crops, labels)
    out = backend_cls(which).from_config(model, options).translate(crops, labels)
    assert psnr(out, ref) >= 40.0
    if tol is not None:
        torch.testing.assert_close(out, ref, rtol=0, atol=tol)


# ----------------------------------------------------------------------------------------------
# Options and errors
# ----------------------------------------------------------------------------------------------


def test_cpu_precision_auto_follows_the_cpu(tiny):
    backend = CpuBackend.from_config(tiny, {})
    assert backend.precision == ("bf16" if native_bf16() else "fp32")
    assert CpuBackend.from_config(tiny, {"precision": "fp32", "batch_size": 3}).batch_size == 3
    ok, reason = CpuBackend.available()
    assert ok and "PyTorch" in reason


@pytest.mark.parametrize("which", [CpuBackend, pytest.param("onnx", marks=needs_ort), pytest.param("openvino", marks=needs_ov)])
def test_bad_options_are_plugin_errors(tiny, which):
    cls = backend_cls(which)
    with pytest.raises(PluginError, match="precision"):
        cls.from_config(tiny, {"precision": "int3"})
    with pytest.raises(PluginError, match="unknown option"):
        cls.from_config(tiny, {"bogus": 1})


def test_auto_priorities_order_fast_paths():
    """Measured on a 2-core AMX CPU (docs/performance.md): openvino bf16 > cpu bf16 > onnx fp32."""
    from starcli_onnx.backend import OnnxBackend
    from starcli_openvino.backend import OpenVinoBackend

    assert CudaBackend.priority > OpenVinoBackend.priority > CpuBackend.priority > OnnxBackend.priority


@needs_ov
def test_auto_picks_openvino_when_installed(tiny):
    backend = backends.make_backend("auto", tiny) if not HAS_CUDA else None
    if backend is not None:
        assert backend.name == "openvino"


@pytest.mark.parametrize("module, which", [("onnxruntime", "onnx"), ("openvino", "openvino")])
def test_missing_runtime_is_reported_not_raised(monkeypatch, module, which):
    monkeypatch.setitem(sys.modules, module, None)  # import now raises ImportError
    cls = backend_cls(which)
    ok, reason = cls.available()
    assert not ok and "pip install" in reason


def test_cuda_backend_unavailable_without_gpu(tiny):
    ok, reason = CudaBackend.available()
    assert ok == HAS_CUDA and reason
    if not HAS_CUDA:
        with pytest.raises(PluginError, match="cuda"):
            CudaBackend.from_config(tiny, {})


@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "fp16", "auto"])
def test_cuda_backend_matches_cpu_fp32(default_model, precision):
    crops = face_crops(128)
    labels = target_labels(len(crops))
    ref = fp32_reference(default_model, crops, labels)
    out = CudaBackend.from_config(default_model, {"precision": precision, "batch_size": 4}).translate(crops, labels)
    assert out.device.type == "cpu" and out.shape == ref.shape
    assert psnr(out, ref) >= 40.0
    assert next(default_model.generator.parameters()).device.type == "cpu", "the shared model stays on the CPU"


# ----------------------------------------------------------------------------------------------
# ONNX export and its cache
# ----------------------------------------------------------------------------------------------


@needs_ort
def test_export_is_cached_by_weights(tiny, home):
    first = export.cached_onnx(tiny)
    assert first.parent == home / "cache" / "onnx" and first.name.endswith("-32.onnx")
    mtime = first.stat().st_mtime_ns
    assert export.cached_onnx(tiny) == first and first.stat().st_mtime_ns == mtime, "second call reuses the file"
    other = make_model(GeneratorConfig(conv_dim=8, c_dim=5, repeat_num=1), 32, seed=1)
    assert export.cached_onnx(other) != first, "other weights, other file"
    assert not list(first.parent.glob("*.tmp-*")), "no temporary files left behind"


@needs_ort
def test_exported_graph_uses_instance_normalization_and_dynamic_batch(tiny, tmp_path):
    import onnx
    import onnxruntime as ort

    path = export.export_onnx(tiny.generator, tmp_path / "g.onnx", image_size=32)
    graph = onnx.load(str(path)).graph
    assert sum(node.op_type == "InstanceNormalization" for node in graph.node) == 1 + 2 + 2 * 1 + 2  # first, down, residual, up
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 3):
        x = torch.rand(n, 3, 32, 32) * 2 - 1
        c = target_labels(n)
        (y,) = session.run(None, {"x": x.numpy(), "c": c.numpy()})
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(y), tiny.generator(x, c), rtol=0, atol=1e-5)
    assert not tiny.generator.training


def test_export_refuses_running_statistics(tiny, tmp_path):
    for module in tiny.generator.modules():
        if isinstance(module, InstanceNorm):
            module.per_image_stats = False
    with pytest.raises(ModelError, match="per-image"):
        export.export_onnx(tiny.generator, tmp_path / "g.onnx", image_size=32)
    assert not (tmp_path / "g.onnx").exists()


# ----------------------------------------------------------------------------------------------
# The critic (source attributes) run by a backend
# ----------------------------------------------------------------------------------------------
CRITIC_CASES = [
    pytest.param("cpu", {}, 1e-4, id="cpu"),
    pytest.param("cpu", {"precision": "bf16"}, 1e-4, id="cpu-bf16-generator-fp32-critic"),
    pytest.param("openvino", {"precision": "fp32"}, 1e-4, id="openvino-fp32", marks=needs_ov),
    pytest.param("openvino", {"precision": "bf16"}, None, id="openvino-bf16", marks=[needs_ov, needs_bf16]),
    pytest.param("onnx", {}, 1e-4, id="onnx-fp32", marks=needs_ort),
]


@pytest.mark.parametrize("model_path", [pytest.param(REF / "100-G.ckpt", id="official"), pytest.param(EMBEDDED, id="embedded")])
@pytest.mark.parametrize("which, options, tol", CRITIC_CASES)
def test_backend_critic_gives_the_torch_critic_labels_on_real_faces(model_path, which, options, tol):
    """A backend's compiled critic estimates the same source attributes as the fp32 PyTorch
    critic on real face crops (fp32 engines: logits within 1e-4)."""
    from starcli.attributes import labels_from_logits
    from starcli.translate import estimate_source_labels

    if not Path(model_path).exists():
        pytest.skip("no embedded trained model in this checkout")
    model = load(model_path, attributes=ATTRS) if Path(model_path).suffix == ".ckpt" else load(model_path)
    crops = face_crops(model.spec.image_size)
    with torch.no_grad():
        ref = model.discriminator(crops * 2 - 1)[1]
    backend = backend_cls(which).from_config(model, options)
    logits = backend.classify(crops)
    assert logits.shape == ref.shape and logits.dtype == torch.float32
    if tol is not None:
        torch.testing.assert_close(logits, ref, rtol=0, atol=tol)
    else:  # bf16: every decision that is not a near tie is the same
        clear = ref.abs() > 0.05 * ref.abs().max()
        assert clear.float().mean() > 0.5
        assert torch.equal((logits > 0)[clear], (ref > 0)[clear])
    if tol is not None:  # same decisions as the fp32 critic
        assert torch.equal(estimate_source_labels(model, crops, backend.classify), labels_from_logits(ref, model.spec))
    assert backend.classify(crops[:0]).shape == (0, ref.shape[1])


@pytest.mark.parametrize("which", ["cpu", pytest.param("openvino", marks=needs_ov)])
def test_translator_uses_the_backend_critic(monkeypatch, which):
    """FaceTranslator estimates source attributes through backend.classify when it exists."""
    from starcli.attributes import parse_settings
    from starcli.translate import FaceTranslator

    model = load(EMBEDDED)
    backend = backend_cls(which).from_config(model, {"precision": "fp32"})
    calls = []
    real = backend.classify
    monkeypatch.setattr(backend, "classify", lambda crops: calls.append(len(crops)) or real(crops))
    translator = FaceTranslator(model, backend, [parse_settings(["hair=blond"], model.spec)])
    crops = face_crops(model.spec.image_size)
    result = translator(crops)
    assert calls == [len(crops)]
    assert result.outputs[0].shape == crops.shape
