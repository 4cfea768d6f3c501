"""Export a StarGAN generator to ONNX for inference engines (ONNX Runtime, OpenVINO).

The exported graph has the official test-time semantics: every InstanceNorm normalises each
image by its own statistics (an ONNX ``InstanceNormalization`` op), which is also what lets the
batch dimension stay dynamic.  Inputs and output are those of ``Generator.forward``:

- ``x``: ``(N, 3, S, S)`` float32 in ``[-1, 1]``
- ``c``: ``(N, C)`` float32 0/1 labels
- ``y``: ``(N, 3, S, S)`` float32 in ``[-1, 1]``

Exports are cached under ``$STARCLI_HOME/cache/onnx/`` by a hash of the generator's weights and
architecture, so a model is exported once per machine (about 1 s for the default generator).

>>> from starcli.stargan import Generator, GeneratorConfig
>>> g = Generator(GeneratorConfig(conv_dim=8, c_dim=2, repeat_num=1)).eval()
>>> path = export_onnx(g, tmp / "g.onnx", image_size=16)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from .errors import ModelError
from .models import StarganModel, starcli_home
from .stargan import Generator, InstanceNorm

#: Bump when the exported graph changes (invalidates cached files).
EXPORT_VERSION = 1
OPSET = 17
INPUT_NAMES = ("x", "c")
OUTPUT_NAME = "y"


def cache_dir() -> Path:
    """Folder of cached exports: ``$STARCLI_HOME/cache/onnx``."""
    return starcli_home() / "cache" / "onnx"


def generator_digest(generator: nn.Module) -> str:
    """SHA-256 (hex, 16 chars) of a generator's architecture and weights.

    Two generators with the same state dict (from the same model file) share a digest; any
    change of a weight, a buffer or the config changes it.
    """
    h = hashlib.sha256()
    h.update(f"starcli-export/{EXPORT_VERSION};opset={OPSET};{getattr(generator, 'config', '')}".encode())
    for key, value in sorted(generator.state_dict().items()):
        value = value.detach().to("cpu").contiguous()
        h.update(f"{key}:{value.dtype}:{tuple(value.shape)};".encode())
        h.update(value.reshape(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return h.hexdigest()[:16]


def _check_per_image(generator: nn.Module) -> None:
    for name, module in generator.named_modules():
        if isinstance(module, InstanceNorm) and not module.per_image_stats:
            raise ModelError(
                f"cannot export generator: InstanceNorm '{name}' uses running statistics "
                "(per_image_stats=False); only per-image statistics (the official test behaviour) export to ONNX"
            )


def _legacy_exporter() -> dict:
    """Ask for the TorchScript-based exporter (torch >= 2.5 defaults to dynamo, which needs
    onnxscript); older torch has only that exporter and no ``dynamo`` argument."""
    import inspect

    return {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}


def export_onnx(generator: Generator, path: str | Path, *, image_size: int = 128, opset: int = OPSET) -> Path:
    """Write ``generator`` as an ONNX file with a dynamic batch dimension; returns ``path``.

    The generator is exported in eval mode with per-image InstanceNorm statistics (raises
    :class:`ModelError` when a layer is set to use running statistics).  The file is written
    atomically (``<name>.tmp-<pid>`` then ``os.replace``).  The generator's own mode and device
    are left unchanged.
    """
    path = Path(path)
    if image_size % 4:
        raise ModelError(f"cannot export generator: image size {image_size} is not a multiple of 4")
    _check_per_image(generator)
    was_training = generator.training
    device = next(generator.parameters()).device
    c_dim = generator.config.c_dim
    x = torch.zeros(2, 3, image_size, image_size)
    c = torch.zeros(2, c_dim)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        generator.cpu().eval()
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # "instance_norm is set to train=True": intended
            torch.onnx.export(
                generator,
                (x, c),
                str(tmp),
                input_names=list(INPUT_NAMES),
                output_names=[OUTPUT_NAME],
                dynamic_axes={"x": {0: "batch"}, "c": {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=opset,
                do_constant_folding=True,
                **_legacy_exporter(),
            )
        os.replace(tmp, path)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"{path}: ONNX export failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
    finally:
        generator.to(device).train(was_training)
        if tmp.exists():
            tmp.unlink()
    return path


def cached_onnx(model: StarganModel | Generator, *, image_size: int | None = None, directory: str | Path | None = None) -> Path:
    """Path of ``model``'s generator exported to ONNX, exporting it on first use.

    ``model``: a :class:`StarganModel` (image size from its card) or a bare :class:`Generator`
    (``image_size`` required, default 128).  Files live in :func:`cache_dir` (or ``directory``)
    as ``g-<digest>-<S>.onnx``.
    """
    if isinstance(model, StarganModel):
        generator = model.generator
        image_size = image_size or model.spec.image_size
    else:
        generator = model
        image_size = image_size or 128
    _check_per_image(generator)
    folder = Path(directory) if directory is not None else cache_dir()
    path = folder / f"g-{generator_digest(generator)}-{image_size}.onnx"
    if not path.is_file():
        export_onnx(generator, path, image_size=image_size)
    return path
