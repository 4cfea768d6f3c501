"""``cuda`` backend: PyTorch on an NVIDIA GPU with fp16/bf16 autocast.

Options (``from_config`` section):

- ``precision``: ``auto`` (default: ``bf16`` on GPUs that support it, else ``fp16``), ``fp16``,
  ``bf16`` or ``fp32``.
- ``batch_size``: crops per generator call (default 32).
- ``device``: ``cuda`` or ``cuda:N`` (default ``cuda``).
- ``compile``: ``false`` (default), ``true`` (``torch.compile``) or ``"cuda-graphs"``
  (``torch.compile(mode="reduce-overhead")``: CUDA graphs, best for small batches; the first
  call of each batch shape compiles).
- ``channels_last``: NHWC layout for tensor-core convolutions (default True).

Host crops are staged through pinned memory and copied asynchronously.  The model's generator is
copied to the GPU; the :class:`~starcli.models.StarganModel` passed in stays on the CPU.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any, ClassVar, Mapping

import torch
from torch import Tensor

from starcli.backends import checked_options
from starcli.errors import PluginError
from starcli.models import StarganModel

OPTIONS = {"precision", "batch_size", "device", "compile", "channels_last", "threads"}


class CudaBackend:
    """PyTorch CUDA execution; ``precision`` auto (bf16 where supported, else fp16), fp16, bf16, fp32."""

    name: ClassVar[str] = "cuda"
    priority: ClassVar[int] = 100
    device_type: ClassVar[str] = "cuda"

    def __init__(self, model: StarganModel, *, precision: str = "auto", batch_size: int = 32, device: str = "cuda", compile: bool | str = False, channels_last: bool = True):
        ok, reason = self.available()
        if not ok:
            raise PluginError(f"backend 'cuda' cannot run here: {reason}")
        self.device = torch.device(device)
        if self.device.type != "cuda":
            raise PluginError(f"backend 'cuda': device must be cuda or cuda:N, not '{device}'")
        if precision == "auto":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if precision not in ("fp16", "bf16", "fp32"):
            raise PluginError(f"backend 'cuda': precision must be auto, fp16, bf16 or fp32, not '{precision}'")
        if compile not in (False, True, "cuda-graphs"):
            raise PluginError(f"backend 'cuda': compile must be false, true or \"cuda-graphs\", not {compile!r}")
        self.model = model
        self.precision = precision
        self.batch_size = max(1, int(batch_size))
        self.channels_last = channels_last
        generator = copy.deepcopy(model.generator).eval().requires_grad_(False).to(self.device)
        if channels_last:
            generator = generator.to(memory_format=torch.channels_last)
        if compile:
            generator = torch.compile(generator, mode="reduce-overhead" if compile == "cuda-graphs" else None)
        self.generator = generator

    @classmethod
    def available(cls) -> tuple[bool, str]:
        if not torch.cuda.is_available():
            build = "CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda} build"
            return False, f"no CUDA device (PyTorch {torch.__version__}, {build})"
        return True, f"{torch.cuda.get_device_name(0)} ({torch.cuda.device_count()} device(s))"

    @classmethod
    def from_config(cls, model: StarganModel, section: Mapping[str, Any]) -> "CudaBackend":
        options = checked_options("cuda", section, OPTIONS)
        options.pop("threads", None)  # host threads do not matter here
        return cls(model, **options)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type="cuda", dtype=dtype)

    @torch.inference_mode()
    def translate(self, crops: Tensor, labels: Tensor) -> Tensor:
        """``(N, 3, S, S)`` [0, 1] crops + ``(N, C)`` labels -> ``(N, 3, S, S)`` [0, 1] float32 on the CPU."""
        if len(crops) == 0:
            return crops.new_empty(crops.shape)
        host_in = crops.detach().to(torch.float32)
        if not host_in.is_cuda:
            host_in = host_in.contiguous().pin_memory()
        out = torch.empty(crops.shape, dtype=torch.float32, pin_memory=True)
        for start in range(0, len(crops), self.batch_size):
            stop = start + self.batch_size
            x = host_in[start:stop].to(self.device, non_blocking=True) * 2.0 - 1.0
            c = labels[start:stop].to(self.device, dtype=torch.float32, non_blocking=True)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with self._autocast():
                y = self.generator(x, c)
            y = y.float().add_(1.0).mul_(0.5).clamp_(0.0, 1.0)
            out[start:stop].copy_(y, non_blocking=True)
        torch.cuda.current_stream(self.device).synchronize()
        return out
