"""``onnx`` backend: the generator exported to ONNX and run by ONNX Runtime on the CPU (fp32).

Options (``[translate.backend_options]`` or ``from_config`` section):

- ``precision``: ``fp32`` (default; ``auto`` means fp32).  Accuracy vs torch fp32: max abs
  difference ~1e-5 on [0, 1] crops (tested: PSNR >= 40 dB, in practice > 90 dB).
- ``batch_size``: crops per ``run`` call (default 8).
- ``threads``: intra-op threads (default: all cores).
- ``spinning``: let idle worker threads spin (default False: other runtimes in the process, e.g.
  torch, are not starved).

Crops are ``(N, 3, S, S)`` float32 in ``[0, 1]``; labels ``(N, C)`` 0/1 in model order.
"""

from __future__ import annotations

import os
import threading
from typing import Any, ClassVar, Mapping

import numpy as np
import torch
from torch import Tensor

from starcli.backends import checked_options, critic_input
from starcli.errors import PluginError
from starcli.models import StarganModel

OPTIONS = {"precision", "batch_size", "threads", "spinning"}


def _import_ort():
    import onnxruntime

    return onnxruntime


class OnnxBackend:
    """ONNX Runtime CPU execution of the exported generator (per-image InstanceNorm, fp32)."""

    name: ClassVar[str] = "onnx"
    priority: ClassVar[int] = 15  # above cpu fp32, below cpu bf16 (see docs/performance.md)

    def __init__(self, model: StarganModel, *, precision: str = "fp32", batch_size: int = 8, threads: int | None = None, spinning: bool = False):
        if precision not in ("fp32", "auto"):
            raise PluginError(f"backend 'onnx': precision must be fp32 (or auto), not '{precision}'")
        ok, reason = self.available()
        if not ok:
            raise PluginError(f"backend 'onnx' cannot run here: {reason}")
        from starcli.export import cached_onnx

        ort = _import_ort()
        self.model = model
        self.precision = "fp32"
        self.batch_size = max(1, int(batch_size))
        self.image_size = model.spec.image_size
        self.onnx_path = cached_onnx(model)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = int(threads) if threads else (os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        self.session = ort.InferenceSession(str(self.onnx_path), sess_options=options, providers=["CPUExecutionProvider"])
        self._critic: Any = None
        self._critic_lock = threading.Lock()

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            ort = _import_ort()
            import onnx  # noqa: F401  (needed by torch.onnx.export)
        except ImportError as exc:
            return False, f"{exc.name or 'onnxruntime'} is not installed (pip install 'starcli[onnx]')"
        if "CPUExecutionProvider" not in ort.get_available_providers():
            return False, f"ONNX Runtime {ort.__version__} has no CPU execution provider"
        return True, f"ONNX Runtime {ort.__version__}, fp32"

    @classmethod
    def from_config(cls, model: StarganModel, section: Mapping[str, Any]) -> "OnnxBackend":
        options = checked_options("onnx", section, OPTIONS)
        return cls(model, **options)

    def classify(self, crops: Tensor) -> Tensor:
        """Critic attribute logits ``(N, C)`` float32 of crops ``(N, 3, S, S)`` in ``[0, 1]`` at the
        critic's input size (one ONNX Runtime thread: it runs beside the generator)."""
        x = critic_input("onnx", self.model, crops)
        if len(x) == 0:
            return torch.zeros(0, self.model.discriminator.config.c_dim)
        with self._critic_lock:
            if self._critic is None:
                from starcli.export import cached_critic_onnx

                ort = _import_ort()
                options = ort.SessionOptions()
                options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                options.intra_op_num_threads = 1
                options.inter_op_num_threads = 1
                self._critic = ort.InferenceSession(str(cached_critic_onnx(self.model)), sess_options=options, providers=["CPUExecutionProvider"])
        (logits,) = self._critic.run(None, {"x": x})
        return torch.from_numpy(np.asarray(logits, np.float32))

    def translate(self, crops: Tensor, labels: Tensor) -> Tensor:
        """``(N, 3, S, S)`` [0, 1] crops + ``(N, C)`` labels -> ``(N, 3, S, S)`` [0, 1] float32."""
        if len(crops) == 0:
            return crops.new_empty(crops.shape)
        # numpy pre/post-processing: no torch thread pool wakes up beside ONNX Runtime's
        x_all = crops.detach().to("cpu", torch.float32).numpy()
        c_all = labels.detach().to("cpu", torch.float32).numpy()
        out = np.empty(x_all.shape, np.float32)
        for start in range(0, len(x_all), self.batch_size):
            stop = start + self.batch_size
            x = x_all[start:stop] * np.float32(2.0) - np.float32(1.0)
            (y,) = self.session.run(None, {"x": x, "c": np.ascontiguousarray(c_all[start:stop])})
            np.clip((y + np.float32(1.0)) * np.float32(0.5), 0.0, 1.0, out=out[start:stop])
        return torch.from_numpy(out)
