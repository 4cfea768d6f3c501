"""Paste translated crops back into their frame: inverse warp, feathered mask, colour match.

Conventions (docs/architecture.md): ``frame`` is ``(3, H, W)`` float32 RGB in ``[0, 1]``; crops
are ``(n, 3, S, S)`` float32 ``[0, 1]``; ``transforms`` are ``(n, 2, 3)`` frame -> crop pixels
(as returned by :func:`starcli.align.estimate_transforms`).

How a face is pasted (all work happens at crop size or on the face's region of the frame):

1. A feathered mask is built once per ``(crop size, feather)`` (cached): a rounded square
   covering the face and hair, blurred with a gaussian; exactly 0 near the crop border.
2. *Colour match*: the per-channel weighted median of ``generated - original`` over the mask's
   feather band (where a seam would show) is subtracted with a weight that is 1 in the band
   and fades to 0 towards the face centre, so a global tint of the generator disappears at the
   seam while interior edits (hair colour, beard, ...) survive.
3. The residual ``generated - original`` (``detail=True``, default) or the generated crop itself
   (``detail=False``) and the mask are warped back into each face's bounding region of the frame
   (one kornia ``warp_affine`` call for all faces) and blended in order. With ``detail=True``
   the frame keeps the detail the crop resolution cannot represent (the pasted result equals
   ``upsampled(generated) + (frame - upsampled(original))``), and an identity translator gives
   the input back exactly.

Pixels where the warped mask is 0 are bit-identical to the input.

>>> import torch
>>> from starcli.align import warp_to_crops
>>> fr = torch.rand(3, 64, 64)
>>> M = torch.tensor([[[1., 0., -8.], [0., 1., -8.]]])
>>> crops = warp_to_crops([fr], M, [0], 32)
>>> bool(torch.equal(paste_back(fr, crops, M), fr))      # identity translator: unchanged
True
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from starcli.align import crop_regions, invert_transforms, warp_to_crops
from starcli.errors import InputError

__all__ = ["DEFAULT_FEATHER", "colour_offsets", "face_mask", "paste_back", "paste_frames"]

DEFAULT_FEATHER = 0.04
"""Gaussian sigma of the mask edge, as a fraction of the crop size."""

_EXPONENT = 4.0  # superellipse exponent of the mask's core (2: ellipse, large: square)


def _radius(crop_size: int, half: float) -> torch.Tensor:
    """Superellipse radius ``(S, S)`` of each crop pixel centre, 1 on a curve of half-size ``half``."""
    u = (torch.arange(crop_size, dtype=torch.float64) + 0.5) / crop_size - 0.5
    dy, dx = torch.meshgrid(u / half, u / half, indexing="ij")
    return (dx.abs() ** _EXPONENT + dy.abs() ** _EXPONENT) ** (1.0 / _EXPONENT)


@lru_cache(maxsize=16)
def _masks(crop_size: int, feather: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mask, band weights, correction weights), each ``(S, S)`` float32, cached."""
    if crop_size < 8:
        raise InputError(None, f"crop size {crop_size} is too small to paste")
    if not 0.0 < feather <= 0.12:
        raise InputError(None, f"feather must be in (0, 0.12] of the crop size, got {feather}")
    sigma = feather * crop_size
    half = 0.5 - 2.5 * feather
    core = (_radius(crop_size, half) <= 1.0).to(torch.float64)
    # separable gaussian blur with zero padding (the mask decays to ~0 at the crop border)
    r = max(1, math.ceil(3.0 * sigma))
    x = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    g = (g / g.sum()).reshape(1, 1, -1)
    m = torch.nn.functional.conv1d(core.reshape(-1, 1, crop_size), g, padding=r).reshape(crop_size, crop_size)
    m = torch.nn.functional.conv1d(m.t().reshape(-1, 1, crop_size), g, padding=r).reshape(crop_size, crop_size).t()
    m = m / m.max()
    m = torch.where(m < 1.0 / 255.0, torch.zeros_like(m), m)
    m[0, :] = m[-1, :] = m[:, 0] = m[:, -1] = 0.0
    band = 4.0 * m * (1.0 - m)
    # correction: 1 from the band outwards, smoothly 0 at the centre half of the face
    rr = _radius(crop_size, half)
    t = ((rr - 0.5) / 0.4).clamp(0.0, 1.0)
    corr = t * t * (3.0 - 2.0 * t)
    return m.float(), band.float(), corr.float()


def face_mask(crop_size: int, feather: float = DEFAULT_FEATHER) -> torch.Tensor:
    """The feathered face mask ``(S, S)`` float32 in ``[0, 1]`` used by :func:`paste_back`.

    >>> m = face_mask(64); m.shape, float(m[32, 32]), float(m[0, 0])
    (torch.Size([64, 64]), 1.0, 0.0)
    """
    return _masks(int(crop_size), float(feather))[0].clone()


def _weighted_median(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Median along the last dim of ``values (..., P)`` with ``weights (P,)``."""
    v, order = values.sort(dim=-1)
    w = weights.expand_as(values).gather(-1, order)
    c = w.cumsum(-1)
    half = c[..., -1:] * 0.5
    i = (c < half).sum(-1, keepdim=True).clamp(max=values.shape[-1] - 1)
    return v.gather(-1, i)[..., 0]


@lru_cache(maxsize=16)
def _band_samples(crop_size: int, feather: float, max_samples: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices and weights of (an evenly strided subset of) the feather band's pixels."""
    _, band, _ = _masks(crop_size, feather)
    idx = (band.flatten() > 0.05).nonzero()[:, 0]
    step = max(1, -(-idx.numel() // max_samples))
    idx = idx[::step]
    return idx, band.flatten()[idx]


def colour_offsets(crops: torch.Tensor, originals: torch.Tensor, feather: float = DEFAULT_FEATHER) -> torch.Tensor:
    """Per-face, per-channel colour offset ``(n, 3)`` of ``crops`` vs ``originals`` in the feather
    band: the band-weighted median of the difference (on at most 4096 evenly spread band pixels)."""
    idx, w = _band_samples(int(crops.shape[-1]), float(feather))
    d = (crops - originals).flatten(2)[..., idx.to(crops.device)]  # (n, 3, P)
    return _weighted_median(d, w.to(d.device))


def paste_back(frame: torch.Tensor, crops: torch.Tensor, transforms: torch.Tensor,
               originals: torch.Tensor | None = None, feather: float = DEFAULT_FEATHER, *,
               colour_match: bool = True, detail: bool = True, inplace: bool = False) -> torch.Tensor:
    """Blend translated crops back into ``frame``; returns ``(3, H, W)`` float32 ``[0, 1]``.

    ``frame``: ``(3, H, W)`` float ``[0, 1]``. ``crops``: ``(n, 3, S, S)`` translated crops.
    ``transforms``: ``(n, 2, 3)`` frame -> crop pixels. ``originals``: ``(n, 3, S, S)`` the crops
    before translation; when ``None`` they are cut again with :func:`warp_to_crops` defaults
    (pass them if you cut with other settings). ``feather``: mask edge sigma as a fraction of S.
    ``colour_match``: remove the generator's colour offset at the seam. ``detail``: paste the
    residual (keeps the frame's detail, exact for an identity translator) instead of the crop.
    Faces are blended in order (later ones over earlier ones); each touches only its region.
    """
    if frame.ndim != 3 or frame.shape[0] != 3:
        raise InputError(None, f"frame must be (3, H, W), got {tuple(frame.shape)}")
    if not frame.is_floating_point():
        raise InputError(None, f"frame must hold float pixels in [0, 1], got {frame.dtype}")
    if crops.ndim != 4 or crops.shape[1] != 3 or crops.shape[2] != crops.shape[3]:
        raise InputError(None, f"crops must be (n, 3, S, S), got {tuple(crops.shape)}")
    n, s = crops.shape[0], crops.shape[-1]
    if transforms.shape != (n, 2, 3):
        raise InputError(None, f"transforms must be ({n}, 2, 3), got {tuple(transforms.shape)}")
    out = frame if inplace else frame.clone()
    if n == 0:
        return out
    import kornia.geometry.transform as KT

    dev = frame.device
    crops = crops.to(device=dev, dtype=torch.float32)
    mask, _, corr = (t.to(dev) for t in _masks(int(s), float(feather)))
    if originals is None and (detail or colour_match):
        originals = warp_to_crops([frame], transforms, [0] * n, s)
    if originals is not None:
        originals = originals.to(device=dev, dtype=torch.float32)
        if originals.shape != crops.shape:
            raise InputError(None, f"originals {tuple(originals.shape)} do not match crops {tuple(crops.shape)}")
    src = crops - originals if detail else crops
    if colour_match:
        off = colour_offsets(crops, originals, feather)  # (n, 3)
        src = src - off[:, :, None, None] * corr
    stack = torch.cat([src, mask.expand(n, 1, s, s)], dim=1)  # (n, 4, S, S)

    h, w = frame.shape[-2:]
    regions = crop_regions(transforms.detach().cpu(), s, [(h, w)] * n, margin=2)
    hmax = max(r[3] - r[1] for r in regions)
    wmax = max(r[2] - r[0] for r in regions)
    inv = invert_transforms(transforms.detach().cpu().to(torch.float64))  # crop -> frame
    inv[:, :, 2] -= torch.tensor([[r[0], r[1]] for r in regions], dtype=torch.float32)  # -> region
    warped = KT.warp_affine(stack, inv.to(dev), dsize=(hmax, wmax), mode="bilinear", padding_mode="zeros",
                            align_corners=True).to(frame.dtype)
    # frame regions before any face is blended (in place, ``out`` is ``frame``)
    bases = [frame[:, y0:y1, x0:x1].clone() if inplace else frame[:, y0:y1, x0:x1] for x0, y0, x1, y1 in regions]
    for j, (x0, y0, x1, y1) in enumerate(regions):
        m = warped[j, 3:, : y1 - y0, : x1 - x0].clamp_(0.0, 1.0)
        v = warped[j, :3, : y1 - y0, : x1 - x0]
        cur = out[:, y0:y1, x0:x1]
        target = v.add_(bases[j]).clamp_(0.0, 1.0) if detail else v.clamp_(0.0, 1.0)
        blended = torch.lerp(cur, target, m)  # cur + m * (target - cur)
        torch.where(m > 0, blended, cur, out=blended)  # m == 0: the input, bit for bit
        cur.copy_(blended)
    return out


def paste_frames(frames, crops: torch.Tensor, transforms: torch.Tensor, frame_index,
                 originals: torch.Tensor | None = None, **options) -> list[torch.Tensor]:
    """:func:`paste_back` for a batch: crop ``i`` goes into ``frames[frame_index[i]]``.

    ``frames``: list of ``(3, H, W)`` float ``[0, 1]`` tensors or a ``(B, 3, H, W)`` tensor.
    Returns a list of ``(3, H, W)`` tensors (frames without faces are returned unchanged, not
    copied). ``options`` go to :func:`paste_back`.
    """
    fl = list(frames.unbind(0)) if isinstance(frames, torch.Tensor) else list(frames)
    idx = torch.as_tensor(frame_index, dtype=torch.int64).reshape(-1)
    if idx.numel() != crops.shape[0]:
        raise InputError(None, f"frame_index has {idx.numel()} entries for {crops.shape[0]} crops")
    out = []
    for i, frame in enumerate(fl):
        sel = (idx == i).nonzero()[:, 0]
        if sel.numel() == 0:
            out.append(frame)
            continue
        orig = None if originals is None else originals[sel]
        out.append(paste_back(frame, crops[sel], transforms[sel], orig, **options))
    return out
