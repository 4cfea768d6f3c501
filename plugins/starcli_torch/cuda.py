"""``cuda`` backend: PyTorch on an NVIDIA GPU with fp16/bf16 autocast."""

from __future__ import annotations

from typing import ClassVar

import torch

from starcli.backends import TorchBackend


class CudaBackend(TorchBackend):
    """PyTorch CUDA execution; ``precision`` fp16 (default), bf16 or fp32."""

    name: ClassVar[str] = "cuda"
    priority: ClassVar[int] = 100
    device_type: ClassVar[str] = "cuda"
    default_precision: ClassVar[str] = "fp16"

    @classmethod
    def available(cls) -> tuple[bool, str]:
        if not torch.cuda.is_available():
            build = "CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda} build"
            return False, f"no CUDA device (PyTorch {torch.__version__}, {build})"
        return True, torch.cuda.get_device_name(0)
