"""Translate stage: aligned crops -> edited crops, one batch of faces at a time.

Each face's *source* labels are estimated with the model's discriminator classifier when it has
one (``source="auto"``), else taken from an explicit ``--source`` setting or the model card's
``default_source``; each requested :class:`~starcli.attributes.Edit` then changes only what it
names.  Crops are ``(N, 3, S, S)`` float32 in ``[0, 1]`` with ``S = spec.image_size``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .attributes import Edit, labels_from_logits, parse_source
from .config import STRENGTH_RANGE
from .errors import AttributeSpecError
from .backends import Backend
from .models import StarganModel


@torch.inference_mode()
def estimate_source_labels(model: StarganModel, crops: Tensor, classify: Optional[Callable[[Tensor], Tensor]] = None) -> Tensor:
    """Attribute labels ``(N, C)`` 0/1 of ``crops`` ``(N, 3, S, S)`` [0, 1] from the critic.

    Crops are resized to the discriminator's input size if needed.  ``classify`` (a backend's
    compiled critic: ``[0, 1]`` crops -> logits ``(N, C)``) runs it when given; otherwise the
    PyTorch critic runs in fp32 with autocast off, as ``TorchBackend.classify`` does (exact
    labels, and faster than bf16 on CPU).  Raises ValueError when the model has no discriminator.
    """
    if model.discriminator is None:
        raise ValueError("model has no discriminator to estimate source attributes")
    side = model.discriminator.config.image_size
    if crops.shape[-1] != side:
        crops = F.interpolate(crops, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
    if classify is not None:
        return labels_from_logits(classify(crops).float(), model.spec)
    device = next(model.discriminator.parameters()).device
    with torch.autocast(device.type, enabled=False):
        _, logits = model.discriminator(crops.to(device, torch.float32) * 2.0 - 1.0)
    return labels_from_logits(logits.float().to(crops.device), model.spec)


EDIT_MODES = ("direct", "difference", "masked")

#: ``masked`` mode: an edit footprint of this mean absolute change (on [0, 1]) or more takes the
#: generator's pixels fully; smaller changes blend linearly (chosen on held-out synth faces).
MASK_FULL_CHANGE = 0.05


def edit_footprint(edited: Tensor, reconstruction: Tensor) -> Tensor:
    """Where an edit acts: ``(N, 1, S, S)`` in ``[0, 1]`` from ``|G(x, c_trg) - G(x, c_src)|``
    (channel mean, box-smoothed over ~1/20 of the crop, saturating at :data:`MASK_FULL_CHANGE`)."""
    k = 2 * max(1, round(edited.shape[-1] / 64)) + 1
    change = (edited - reconstruction).abs().mean(1, keepdim=True)
    change = F.avg_pool2d(change, k, stride=1, padding=k // 2, count_include_pad=False)
    return (change / MASK_FULL_CHANGE).clamp_(0.0, 1.0)


def edit_crops(
    translate: Callable[[Tensor, Tensor], Tensor],
    crops: Tensor,
    source: Tensor,
    targets: list[Tensor],
    mode: str = "direct",
    *,
    strength: float = 1.0,
) -> list[Tensor]:
    """Apply each target label set to ``crops`` with ``translate(crops, labels) -> crops``.

    crops ``(N, 3, S, S)`` in ``[0, 1]``; source and each target ``(N, C)`` 0/1.  Returns one
    ``(N, 3, S, S)`` batch in ``[0, 1]`` per target; all edits go through ``translate`` in one call.

    - ``direct``: StarGAN's output ``G(x, c_trg)``.
    - ``difference``: ``x + G(x, c_trg) - G(x, c_src)``: the generator's own reconstruction
      error cancels wherever the edit changes nothing, so regions outside the edit keep the
      input's pixels.
    - ``masked``: ``x + m * (G(x, c_trg) - x)`` with ``m`` = :func:`edit_footprint`: the
      generator's output where the edit acts (edits nearly as strong as ``direct``), the
      input's pixels where it does not (as ``difference``).

    ``difference`` and ``masked`` cost one extra generator pass per face, shared by all edits.
    ``strength`` scales every edit: ``x + strength * (edited - x)`` (``< 1`` weaker, ``> 1``
    stronger, clipped to ``[0, 1]``).
    """
    if mode not in EDIT_MODES:
        raise ValueError(f"edit mode must be one of {', '.join(EDIT_MODES)}, not {mode!r}")
    n = len(crops)
    if n == 0:
        return [crops.clone() for _ in targets]
    labels = list(targets) + ([source] if mode != "direct" else [])
    outputs = list(translate(crops.repeat(len(labels), 1, 1, 1), torch.cat(labels)).split(n))
    if mode == "direct":
        edited = outputs
    else:
        reconstruction = outputs.pop()
        if mode == "difference":
            edited = [(crops + out - reconstruction).clamp_(0.0, 1.0) for out in outputs]
        else:
            edited = [torch.lerp(crops, out, edit_footprint(out, reconstruction)).clamp_(0.0, 1.0) for out in outputs]
    if strength != 1.0:
        edited = [torch.lerp(crops, e, strength).clamp_(0.0, 1.0) for e in edited]
    return edited


@dataclass
class TranslationResult:
    """Per-batch output: ``source`` labels ``(N, C)``; ``outputs[k]`` crops for ``edits[k]``."""

    source: Tensor
    targets: list[Tensor]
    outputs: list[Tensor]


class FaceTranslator:
    """Apply ``edits`` to batches of aligned crops with ``backend``.

    ``source``: ``"auto"`` (discriminator if present, else the card's default), or a setting
    string such as ``"hair=brown,no-male"`` applied on top of the card's default. ``strength``
    scales every edit (1: as the model makes it; see :func:`edit_crops`).
    """

    def __init__(self, model: StarganModel, backend: Backend, edits: list[Edit], source: str = "auto", edit_mode: str | None = None, strength: float = 1.0):
        self.model = model
        self.backend = backend
        self.edits = edits
        self.edit_mode = edit_mode or model.spec.edit_mode
        if self.edit_mode not in EDIT_MODES:
            raise AttributeSpecError(f"edit mode must be one of {', '.join(EDIT_MODES)}, not '{self.edit_mode}'")
        lo, hi = STRENGTH_RANGE
        if not lo <= strength <= hi:
            raise AttributeSpecError(f"edit strength must be in [{lo:g}, {hi:g}], not {strength}")
        self.strength = strength
        self.use_critic = source == "auto" and model.discriminator is not None
        # a backend may run the critic itself (compiled, cheaper than eager PyTorch per call)
        self.classify = getattr(backend, "classify", None) if self.use_critic else None
        fixed = parse_source(None if source == "auto" else source, model.spec)
        self.fixed_source = torch.tensor([[float(fixed[a]) for a in model.spec.attributes]])

    def source_labels(self, crops: Tensor) -> Tensor:
        if self.use_critic:
            return estimate_source_labels(self.model, crops, self.classify)
        return self.fixed_source.expand(len(crops), -1).clone()

    def __call__(self, crops: Tensor) -> TranslationResult:
        """crops ``(N, 3, S, S)`` [0, 1] -> one ``(N, 3, S, S)`` [0, 1] batch per edit.

        All edits of all faces go through the backend in one call (batched across faces and
        edits); the backend chunks to its own batch size.
        """
        source = self.source_labels(crops)
        targets = [edit.apply(source) for edit in self.edits]
        outputs = edit_crops(self.backend.translate, crops, source, targets, self.edit_mode, strength=self.strength)
        return TranslationResult(source, targets, outputs)
