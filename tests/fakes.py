"""Test doubles registered as plugins: an identity generator backend and a fixed-landmark detector."""

from __future__ import annotations

from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
from torch import Tensor

from starcli.detect import Face


class IdentityBackend:
    """Returns the crops unchanged (align -> paste must then reproduce the input)."""

    name: ClassVar[str] = "identity"
    priority: ClassVar[int] = -100  # never chosen by ``auto``

    def __init__(self, model=None):
        self.model = model

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return True, "test double"

    @classmethod
    def from_config(cls, model, section: Mapping[str, Any]) -> "IdentityBackend":
        return cls(model)

    def translate(self, crops: Tensor, labels: Tensor) -> Tensor:
        return crops.clone()


class FakeDetector:
    """One face per image with landmarks at fixed fractions of the image size.

    Eyes at (0.40, 0.45) and (0.60, 0.45), nose base (0.50, 0.57), mouth (0.50, 0.66) of (W, H).
    """

    name: ClassVar[str] = "fake"
    thread_safe: ClassVar[bool] = True  # no shared state: Pipeline.detect skips its lock
    POINTS: ClassVar[dict[str, tuple[float, float]]] = {
        "left_eye": (0.40, 0.45), "right_eye": (0.60, 0.45), "nose": (0.50, 0.57), "mouth": (0.50, 0.66),
    }

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return True, "test double"

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> "FakeDetector":
        return cls()

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        out = []
        for img in images:
            h, w = img.shape[:2]
            lms = {k: (u * w - 0.5, v * h - 0.5) for k, (u, v) in self.POINTS.items()}
            out.append([Face((0.3 * w, 0.3 * h, 0.7 * w, 0.8 * h), 1.0, lms, np.array(list(lms.values())))])
        return out
