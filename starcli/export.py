"""Export a StarGAN generator (and its critic) to ONNX for inference engines (ONNX Runtime, OpenVINO).

The exported graph has the official test-time semantics: every InstanceNorm normalises each
image by its own statistics (an ONNX ``InstanceNormalization`` op), which is also what lets the
batch dimension stay dynamic.  Inputs and output are those of ``Generator.forward``:

- ``x``: ``(N, 3, S, S)`` float32 in ``[-1, 1]``
- ``c``: ``(N, C)`` float32 0/1 labels
- ``y``: ``(N, 3, S, S)`` float32 in ``[-1, 1]``

The critic export (:func:`export_critic_onnx`) is the discriminator's attribute classifier: input
``x`` as above, output ``logits`` ``(N, C)`` float32 (the source-attribute estimate of translate).

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
from .stargan import Discriminator, Generator, InstanceNorm

#: Bump when the exported graph changes (invalidates cached files).
EXPORT_VERSION = 1
OPSET = 17
INPUT_NAMES = ("x", "c")
OUTPUT_NAME = "y"
CRITIC_OUTPUT_NAME = "logits"


def cache_dir() -> Path:
    """Folder of cached exports: ``$STARCLI_HOME/cache/onnx``."""
    return starcli_home() / "cache" / "onnx"


def generator_digest(generator: nn.Module) -> str:
    """SHA-256 (hex, 16 chars) of a network's architecture and weights (generator or critic).

    Two networks with the same state dict (from the same model file) share a digest; any
    change of a weight, a buffer or the config changes it.
    """
    h = hashlib.sha256()
    h.update(f"starcli-export/{EXPORT_VERSION};opset={OPSET};{type(generator).__name__};{getattr(generator, 'config', '')}".encode())
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


def _export(module: nn.Module, inputs: tuple[torch.Tensor, ...], input_names: list[str], output_name: str, path: Path, opset: int) -> Path:
    """torch.onnx.export of ``module`` (eval, CPU) with a dynamic batch axis, written atomically
    (``<name>.tmp-<pid>`` then ``os.replace``); the module's mode and device are restored."""
    was_training = module.training
    device = next(module.parameters()).device
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        module.cpu().eval()
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # "instance_norm is set to train=True": intended
            torch.onnx.export(
                module,
                inputs,
                str(tmp),
                input_names=input_names,
                output_names=[output_name],
                dynamic_axes={**{name: {0: "batch"} for name in input_names}, output_name: {0: "batch"}},
                opset_version=opset,
                do_constant_folding=True,
                **_legacy_exporter(),
            )
        os.replace(tmp, path)
    except Exception as exc:
        raise ModelError(f"{path}: ONNX export failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
    finally:
        module.to(device).train(was_training)
        if tmp.exists():
            tmp.unlink()
    return path


def export_onnx(generator: Generator, path: str | Path, *, image_size: int = 128, opset: int = OPSET) -> Path:
    """Write ``generator`` as an ONNX file with a dynamic batch dimension; returns ``path``.

    The generator is exported in eval mode with per-image InstanceNorm statistics (raises
    :class:`ModelError` when a layer is set to use running statistics).  The file is written
    atomically (``<name>.tmp-<pid>`` then ``os.replace``).  The generator's own mode and device
    are left unchanged.
    """
    if image_size % 4:
        raise ModelError(f"cannot export generator: image size {image_size} is not a multiple of 4")
    _check_per_image(generator)
    x = torch.zeros(2, 3, image_size, image_size)
    c = torch.zeros(2, generator.config.c_dim)
    return _export(generator, (x, c), list(INPUT_NAMES), OUTPUT_NAME, Path(path), opset)


class _CriticLogits(nn.Module):
    """The discriminator's classifier head only: ``x (N, 3, S, S) [-1, 1] -> logits (N, C)``."""

    def __init__(self, discriminator: Discriminator):
        super().__init__()
        self.discriminator = discriminator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.discriminator(x)[1]


def export_critic_onnx(discriminator: Discriminator, path: str | Path, *, opset: int = OPSET) -> Path:
    """Write the critic's attribute classifier (input ``x``, output ``logits`` ``(N, C)``) as
    ONNX with a dynamic batch dimension, atomically; returns ``path``."""
    size = discriminator.config.image_size
    return _export(_CriticLogits(discriminator), (torch.zeros(2, 3, size, size),), ["x"], CRITIC_OUTPUT_NAME, Path(path), opset)


def cached_critic_onnx(model: StarganModel, *, directory: str | Path | None = None) -> Path:
    """Path of ``model``'s critic classifier exported to ONNX (``d-<digest>-<S>.onnx`` in
    :func:`cache_dir` or ``directory``), exporting it on first use. Raises :class:`ModelError`
    when the model has no discriminator."""
    if model.discriminator is None:
        raise ModelError(f"{model.spec.name}: no discriminator to export")
    folder = Path(directory) if directory is not None else cache_dir()
    path = folder / f"d-{generator_digest(model.discriminator)}-{model.discriminator.config.image_size}.onnx"
    if not path.is_file():
        export_critic_onnx(model.discriminator, path)
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
