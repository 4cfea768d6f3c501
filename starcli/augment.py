"""Batched training augmentation with kornia, on the training device.

``build_augmenter(cfg)`` returns a callable ``aug(x, *others) -> tensor or tuple``: images
``(B, 3, H, W)`` float in ``[0, 1]``; every extra tensor (a counterfactual pair's target) gets the
*same* random flip, affine jitter and colour change as ``x``. Randomness comes from torch's global
RNG (saved in checkpoints, so resumed runs replay it exactly).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

__all__ = ["AugmentConfig", "build_augmenter"]


@dataclass
class AugmentConfig:
    """Augmentation settings (``[augment]`` table). Probabilities are per image."""

    enabled: bool = True
    hflip: float = 0.5  # probability of a horizontal flip
    affine: float = 0.0  # probability of a small affine jitter
    degrees: float = 3.0
    translate: float = 0.03  # fraction of the side
    scale: float = 0.04  # +- relative scale change
    color: float = 0.0  # probability of a ColorJiggle
    brightness: float = 0.1
    contrast: float = 0.1
    saturation: float = 0.1
    hue: float = 0.02


Augmenter = Callable[..., "Tensor | tuple[Tensor, ...]"]


def build_augmenter(cfg: AugmentConfig) -> Augmenter | None:
    """Kornia pipeline for ``cfg`` or None when nothing is enabled."""
    if not cfg.enabled or (cfg.hflip <= 0 and cfg.affine <= 0 and cfg.color <= 0):
        return None
    import kornia.augmentation as K

    ops: list[torch.nn.Module] = []
    if cfg.hflip > 0:
        ops.append(K.RandomHorizontalFlip(p=cfg.hflip))
    if cfg.affine > 0:
        ops.append(
            K.RandomAffine(
                degrees=cfg.degrees,
                translate=(cfg.translate, cfg.translate),
                scale=(1.0 - cfg.scale, 1.0 + cfg.scale),
                padding_mode="border",
                p=cfg.affine,
            )
        )
    if cfg.color > 0:
        ops.append(K.ColorJiggle(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue, p=cfg.color))
    cache: dict[int, torch.nn.Module] = {}

    def seq(n: int) -> torch.nn.Module:
        if n not in cache:
            cache[n] = K.AugmentationSequential(*ops, data_keys=["input"] * n)
        return cache[n]

    def augment(x: Tensor, *others: Tensor) -> Tensor | tuple[Tensor, ...]:
        """Augment ``x`` and apply identical parameters to ``others`` (same batch size)."""
        out = seq(1 + len(others))(x, *others)
        if not others:
            return (out if isinstance(out, Tensor) else out[0]).clamp_(0.0, 1.0)
        return tuple(o.clamp_(0.0, 1.0) for o in out)

    return augment
