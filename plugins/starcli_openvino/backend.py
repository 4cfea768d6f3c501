"""``openvino`` backend: the generator exported to ONNX, compiled by OpenVINO for the CPU.

The fastest generator path on CPUs with native bf16 (AVX512_BF16 / AMX): OpenVINO runs the
convolutions in bf16 when ``INFERENCE_PRECISION_HINT`` is bf16.  Options (``from_config``):

- ``precision``: ``auto`` (default: ``bf16`` when the CPU supports it, else ``fp32``), ``bf16``,
  ``fp32`` or ``fp16`` (CPUs with AVX512_FP16).  Accuracy vs torch fp32 on real face crops
  (tested): bf16 and fp16 PSNR >= 40 dB; fp32 max abs difference ~1e-5.
- ``batch_size``: crops per inference request (default 4).
- ``threads``: CPU threads OpenVINO may use (default: all cores).
- ``streams``: parallel inference streams when a call has more than ``batch_size`` crops
  (default ``auto``: OpenVINO's throughput setting, one stream per core on small machines).

The critic (source-attribute classifier) runs here too (:meth:`OpenVinoBackend.classify`), on one
thread in the requested precision so that it can run beside the generator: its weights are
compiled once instead of being re-packed on every call as eager PyTorch does.

One ``openvino.Core`` is shared per process.  Pre/post-processing is done in numpy so that no
torch thread pool spins beside OpenVINO's.  Crops are ``(N, 3, S, S)`` float32 in ``[0, 1]``;
labels ``(N, C)`` 0/1 in model order.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar, Mapping

import numpy as np
import torch
from torch import Tensor

from starcli.backends import checked_options, critic_input
from starcli.errors import PluginError
from starcli.models import StarganModel

OPTIONS = {"precision", "batch_size", "threads", "streams"}
PRECISIONS = ("auto", "bf16", "fp32", "fp16")
_OV_PRECISION = {"bf16": "bf16", "fp32": "f32", "fp16": "f16"}
_CAPABILITY = {"bf16": "BF16", "fp16": "FP16", "fp32": "FP32"}

_core = None
_core_lock = threading.Lock()


def core():
    """The process-wide ``openvino.Core`` (created on first use)."""
    global _core
    with _core_lock:
        if _core is None:
            import openvino

            _core = openvino.Core()
        return _core


def cpu_capabilities() -> list[str]:
    """OpenVINO's CPU ``OPTIMIZATION_CAPABILITIES`` (e.g. ``['BF16', 'FP32', 'INT8', ...]``)."""
    return list(core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def resolve_precision(precision: str) -> str:
    """``auto`` -> ``bf16`` if the CPU has native bf16, else ``fp32``; checks forced choices."""
    if precision not in PRECISIONS:
        raise PluginError(f"backend 'openvino': precision must be one of {', '.join(PRECISIONS)}, not '{precision}'")
    caps = cpu_capabilities()
    if precision == "auto":
        return "bf16" if "BF16" in caps else "fp32"
    if _CAPABILITY[precision] not in caps:
        raise PluginError(f"backend 'openvino': this CPU has no native {precision} support (capabilities: {', '.join(caps)})")
    return precision


class OpenVinoBackend:
    """OpenVINO CPU execution of the exported generator (per-image InstanceNorm)."""

    name: ClassVar[str] = "openvino"
    priority: ClassVar[int] = 30  # fastest on this kind of CPU (docs/performance.md)

    def __init__(self, model: StarganModel, *, precision: str = "auto", batch_size: int = 4, threads: int | None = None, streams: int | str = "auto"):
        ok, reason = self.available()
        if not ok:
            raise PluginError(f"backend 'openvino' cannot run here: {reason}")
        from starcli.export import cached_onnx

        self.model = model
        self.precision = resolve_precision(precision)
        self.batch_size = max(1, int(batch_size))
        self.threads = int(threads) if threads else 0
        if streams != "auto" and (not str(streams).isdigit() or int(streams) < 1):
            raise PluginError(f"backend 'openvino': streams must be 'auto' or a positive integer, not '{streams}'")
        self.streams = streams
        self.image_size = model.spec.image_size
        self.c_dim = model.generator.config.c_dim
        self.onnx_path = cached_onnx(model)
        self._source = core().read_model(str(self.onnx_path))
        self._compiled: dict[tuple[str, int], Any] = {}
        self._queue: Any = None
        self._requests: dict[int, Any] = {}
        self._lock = threading.Lock()
        self._run_lock = threading.Lock()
        self._critic: Any = None
        self._critic_local = threading.local()

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            import openvino
        except ImportError:
            return False, "openvino is not installed (pip install 'starcli[openvino]')"
        try:
            import onnx  # noqa: F401  (needed by torch.onnx.export)
        except ImportError:
            return False, "onnx is not installed (pip install 'starcli[openvino]')"
        try:
            devices = core().available_devices
            if "CPU" not in devices:
                return False, f"OpenVINO {openvino.__version__} sees no CPU device"
            caps = cpu_capabilities()
        except Exception as exc:  # a broken runtime must not break `starcli plugins`
            return False, f"OpenVINO failed to start: {type(exc).__name__}: {exc}"
        best = "bf16" if "BF16" in caps else "fp32"
        return True, f"OpenVINO {openvino.__version__.split('-')[0]}, CPU {best}"

    @classmethod
    def from_config(cls, model: StarganModel, section: Mapping[str, Any]) -> "OpenVinoBackend":
        options = checked_options("openvino", section, OPTIONS)
        return cls(model, **options)

    def compiled(self, batch: int, mode: str = "latency"):
        """The model compiled for a static batch of ``batch`` crops (cached).

        ``mode``: ``latency`` (one request uses every thread) or ``throughput`` (several streams
        working on separate requests).
        """
        key = (mode, batch)
        with self._lock:
            if key not in self._compiled:
                model = self._source.clone()
                model.reshape({"x": [batch, 3, self.image_size, self.image_size], "c": [batch, self.c_dim]})
                config: dict[str, Any] = {
                    "INFERENCE_PRECISION_HINT": _OV_PRECISION[self.precision],
                    "PERFORMANCE_HINT": "THROUGHPUT" if mode == "throughput" else "LATENCY",
                }
                if self.threads:
                    config["INFERENCE_NUM_THREADS"] = self.threads
                if mode == "throughput" and self.streams != "auto":
                    config["NUM_STREAMS"] = int(self.streams)
                self._compiled[key] = core().compile_model(model, "CPU", config)
            return self._compiled[key]

    def classify(self, crops: Tensor) -> Tensor:
        """Critic attribute logits ``(N, C)`` float32 of crops ``(N, 3, S, S)`` in ``[0, 1]`` at the
        critic's input size. One thread; safe to call beside :meth:`translate`."""
        x = critic_input("openvino", self.model, crops)
        if len(x) == 0:
            return torch.zeros(0, self.model.discriminator.config.c_dim)
        with self._lock:
            if self._critic is None:
                from starcli.export import cached_critic_onnx

                source = core().read_model(str(cached_critic_onnx(self.model)))
                config = {"INFERENCE_PRECISION_HINT": _OV_PRECISION[self.precision], "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": 1}
                self._critic = core().compile_model(source, "CPU", config)
        request = getattr(self._critic_local, "request", None)
        if request is None:  # one request per calling thread
            request = self._critic_local.request = self._critic.create_infer_request()
        request.infer({"x": x})
        return torch.from_numpy(np.array(request.get_output_tensor(0).data, np.float32, copy=True))

    def _request(self, batch: int):
        """A reusable inference request of the latency-mode model for ``batch`` crops."""
        if batch not in self._requests:
            self._requests[batch] = self.compiled(batch).create_infer_request()
        return self._requests[batch]

    def translate(self, crops: Tensor, labels: Tensor) -> Tensor:
        """``(N, 3, S, S)`` [0, 1] crops + ``(N, C)`` labels -> ``(N, 3, S, S)`` [0, 1] float32.

        Up to ``batch_size`` crops run as one request on every thread; more run as
        ``batch_size`` chunks on parallel streams.
        """
        if len(crops) == 0:
            return crops.new_empty(crops.shape)
        with self._run_lock:
            return self._translate(crops, labels)

    def _translate(self, crops: Tensor, labels: Tensor) -> Tensor:
        import openvino

        x_all = crops.detach().to("cpu", torch.float32).numpy() * np.float32(2.0) - np.float32(1.0)
        c_all = np.ascontiguousarray(labels.detach().to("cpu", torch.float32).numpy())
        out = np.empty(x_all.shape, np.float32)
        n, bs = len(x_all), self.batch_size

        def store(start: int, y: np.ndarray) -> None:
            np.clip((y + np.float32(1.0)) * np.float32(0.5), 0.0, 1.0, out=out[start : start + len(y)])

        if n <= bs:
            request = self._request(n)
            request.infer({"x": x_all, "c": c_all})
            store(0, request.get_output_tensor(0).data)
            return torch.from_numpy(out)

        full = n - n % bs
        compiled = self.compiled(bs, "throughput")
        if self._queue is None or self._queue[0] is not compiled:
            self._queue = (compiled, openvino.AsyncInferQueue(compiled, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))))
        queue = self._queue[1]
        queue.set_callback(lambda request, start: store(start, request.get_output_tensor(0).data))
        for start in range(0, full, bs):
            queue.start_async({"x": x_all[start : start + bs], "c": c_all[start : start + bs]}, userdata=start)
        if full < n:  # remainder: its own small static shape, on the calling thread meanwhile
            request = self._request(n - full)
            request.infer({"x": x_all[full:], "c": c_all[full:]})
            store(full, request.get_output_tensor(0).data)
        queue.wait_all()
        return torch.from_numpy(out)
