"""Alignment: landmarks -> ``(N, 2, 3)`` similarity transforms -> batched face crops.

Conventions (docs/architecture.md): images are ``(3, H, W)`` / ``(B, 3, H, W)`` float32 in
``[0, 1]``, RGB; points are ``(x, y)`` pixels with pixel centres at integers; transforms are
``(N, 2, 3)`` float32 mapping *frame pixels -> crop pixels*; crop ``i`` comes from frame
``frame_index[i]``. Templates are in normalised crop units: crop pixel ``x = u * S - 0.5``.

>>> import torch
>>> tpl = template_tensor(CELEBA_TEMPLATE, ["left_eye", "right_eye", "mouth"])
>>> pts = tpl[None] * 256 - 0.5                       # landmarks already at a 256 crop's template
>>> M = estimate_transforms(pts, tpl, 128)              # -> scale 0.5
>>> M.shape, round(float(M[0, 0, 0]), 4)
(torch.Size([1, 2, 3]), 0.5)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from starcli.errors import InputError
from starcli.spec import CELEBA_POINTS

__all__ = [
    "CELEBA_TEMPLATE",
    "crop_faces",
    "crop_regions",
    "estimate_transforms",
    "face_points",
    "invert_transforms",
    "template_tensor",
    "warp_to_crops",
]

# CelebA "align&cropped" geometry as seen by StarGAN (178x218 aligned frame, centre crop 178x178,
# resize to S), in normalised crop units u = (x_0based + 0.5) / 178:
#   left eye  (70.745, 112)    -> (0.39463, 0.51404)
#   right eye (108.237, 112)   -> (0.60526, 0.51404)
#   mouth     (89.432, 153.514) -> (0.49962, 0.74727)      (1-based pixels, 20 rows dropped on top)
# "nose" (dlib 5-point nose base) is not part of CelebA's alignment; it was calibrated on FairFace
# (`python benchmarks/detect_bench.py --calibrate-nose --fairface 195`, docs/detectors.md): on the
# 153 of the first 195 photos (padded 25% per side) where dlib's HOG detector found a face, the
# 68-point model gave eye centres (mean of points 36-41 / 42-47) and the mouth centre (mean of 48
# and 54); their least-squares similarity to the three CelebA points (median residual 0.008 crop
# units) mapped the 5-point model's nose base into the template. Per-axis median: (0.50088,
# 0.68050); interquartile range u 0.482..0.522, v 0.670..0.691.
CELEBA_TEMPLATE: dict[str, tuple[float, float]] = CELEBA_POINTS  # starcli.spec holds the one copy


def template_tensor(template: Mapping[str, Sequence[float]], names: Sequence[str]) -> torch.Tensor:
    """``(K, 2)`` float32 tensor of the template points ``names`` (normalised crop units)."""
    missing = [n for n in names if n not in template]
    if missing:
        raise InputError(None, f"template has no point(s) {', '.join(missing)}")
    return torch.tensor([list(template[n]) for n in names], dtype=torch.float32)


def estimate_transforms(landmarks: torch.Tensor, template: torch.Tensor, crop_size: int,
                        weights: torch.Tensor | None = None) -> torch.Tensor:
    """Least-squares 4-DOF similarity (rotation, uniform scale, translation; no reflection).

    ``landmarks``: ``(N, K, 2)`` frame pixels. ``template``: ``(K, 2)`` or ``(N, K, 2)`` in
    normalised crop units (crop pixel = ``u * crop_size - 0.5``). ``weights``: optional
    ``(N, K)`` or ``(K,)`` non-negative point weights. Returns ``(N, 2, 3)`` float32 frame ->
    crop pixel transforms minimising ``sum_k w_k |M p_k - q_k|^2`` (Umeyama's solution without
    reflection; computed in float64).

    >>> src = torch.tensor([[[0., 0.], [2., 0.]]])
    >>> M = estimate_transforms(src, torch.tensor([[0.5, 0.5], [1.5, 0.5]]) / 4, 4)   # scale 0.5
    >>> [[round(v, 4) + 0.0 for v in row] for row in M[0].tolist()]
    [[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]]
    """
    if landmarks.ndim != 3 or landmarks.shape[-1] != 2:
        raise InputError(None, f"landmarks must be (N, K, 2), got {tuple(landmarks.shape)}")
    n, k, _ = landmarks.shape
    if k < 2:
        raise InputError(None, "a similarity transform needs at least 2 landmarks per face")
    p = landmarks.to(torch.float64)
    q = template.to(device=p.device, dtype=torch.float64) * float(crop_size) - 0.5
    q = q.expand(n, k, 2) if q.ndim == 2 else q
    if q.shape != p.shape:
        raise InputError(None, f"template {tuple(template.shape)} does not match landmarks {tuple(landmarks.shape)}")
    w = torch.ones(n, k, dtype=torch.float64, device=p.device) if weights is None else \
        weights.to(device=p.device, dtype=torch.float64).expand(n, k)
    w = w / w.sum(dim=1, keepdim=True).clamp_min(1e-12)
    pm = (w[..., None] * p).sum(1, keepdim=True)
    qm = (w[..., None] * q).sum(1, keepdim=True)
    pc, qc = p - pm, q - qm
    var = (w * (pc**2).sum(-1)).sum(1)  # (N,)
    if bool((var < 1e-12).any()):
        raise InputError(None, "landmarks of a face coincide: cannot estimate its alignment")
    # x' = a x - b y + tx ; y' = b x + a y + ty  (a = s cos t, b = s sin t)
    a = (w * (pc[..., 0] * qc[..., 0] + pc[..., 1] * qc[..., 1])).sum(1) / var
    b = (w * (pc[..., 0] * qc[..., 1] - pc[..., 1] * qc[..., 0])).sum(1) / var
    R = torch.stack([torch.stack([a, -b], -1), torch.stack([b, a], -1)], -2)  # (N, 2, 2)
    t = qm[:, 0] - (R @ pm[:, 0, :, None])[..., 0]
    return torch.cat([R, t[..., None]], dim=-1).to(torch.float32)


def face_points(faces: Sequence, template: Mapping[str, Sequence[float]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack the landmarks of ``faces`` that the template knows.

    Uses the template's names (in template order) that *every* face has, so the result can be
    fitted in one batch. Returns ``(points (N, K, 2) frame pixels, template (K, 2))``.
    Raises :class:`InputError` if fewer than 2 names are shared.

    >>> from starcli.detect import Face
    >>> import numpy as np
    >>> f = Face((0, 0, 9, 9), 1.0, {"left_eye": (3.0, 4.0), "right_eye": (6.0, 4.0), "x": (0, 0)}, np.zeros((3, 2)))
    >>> p, t = face_points([f], CELEBA_TEMPLATE); p.shape, t.shape
    (torch.Size([1, 2, 2]), torch.Size([2, 2]))
    """
    if not faces:
        return torch.zeros(0, 2, 2), torch.zeros(2, 2)
    names = [n for n in template if all(n in f.landmarks for f in faces)]
    if len(names) < 2:
        raise InputError(None, "faces share fewer than 2 landmarks with the crop template "
                               f"(template: {', '.join(template)})")
    pts = torch.tensor([[list(f.landmarks[n]) for n in names] for f in faces], dtype=torch.float32)
    return pts, template_tensor(template, names)


def invert_transforms(transforms: torch.Tensor) -> torch.Tensor:
    """Inverse of ``(N, 2, 3)`` affine transforms (crop -> frame pixels), float32."""
    m = transforms.to(torch.float64)
    A = m[:, :, :2]
    Ai = torch.linalg.inv(A)
    t = -(Ai @ m[:, :, 2:])
    return torch.cat([Ai, t], dim=-1).to(torch.float32)


def crop_regions(transforms: torch.Tensor, crop_size: int, sizes: Sequence[tuple[int, int]],
                 margin: int | Sequence[int] = 3) -> list[tuple[int, int, int, int]]:
    """Frame regions ``(x0, y0, x1, y1)`` (int, end-exclusive, clipped) that a crop covers.

    ``transforms``: ``(N, 2, 3)`` frame -> crop; ``sizes``: per face its frame ``(H, W)``. The
    region is the bounding box of the crop square mapped into the frame, plus ``margin`` pixels
    (an int, or one per face) for the interpolation kernel. A face fully outside its frame gets
    a 1x1 region at the nearest corner.
    """
    inv = invert_transforms(transforms).to(torch.float64)
    s = float(crop_size)
    corners = torch.tensor([[-0.5, -0.5, 1.0], [s - 0.5, -0.5, 1.0], [-0.5, s - 0.5, 1.0], [s - 0.5, s - 0.5, 1.0]],
                           dtype=torch.float64)
    fc = torch.einsum("nij,kj->nki", inv, corners)  # (N, 4, 2)
    mg = torch.as_tensor(margin, dtype=torch.float64).reshape(-1, 1)
    lo = fc.amin(1).floor() - mg
    hi = fc.amax(1).ceil() + mg + 1
    out = []
    for (h, w), l, u in zip(sizes, lo.tolist(), hi.tolist()):
        x0 = int(min(max(l[0], 0), w - 1))
        y0 = int(min(max(l[1], 0), h - 1))
        x1 = int(max(min(u[0], w), x0 + 1))
        y1 = int(max(min(u[1], h), y0 + 1))
        out.append((x0, y0, x1, y1))
    return out


def _frame_list(frames) -> list[torch.Tensor]:
    if isinstance(frames, torch.Tensor):
        if frames.ndim == 3:
            frames = frames[None]
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise InputError(None, f"frames must be (B, 3, H, W), got {tuple(frames.shape)}")
        return list(frames.unbind(0))
    out = list(frames)
    for i, f in enumerate(out):
        if not isinstance(f, torch.Tensor) or f.ndim != 3 or f.shape[0] != 3:
            raise InputError(None, f"frame {i}: expected a (3, H, W) tensor, got "
                                   f"{tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__}")
    for i, f in enumerate(out):
        if not f.is_floating_point():
            raise InputError(None, f"frame {i}: expected float pixels in [0, 1], got {f.dtype}")
    return out


def warp_to_crops(frames, transforms: torch.Tensor, frame_index, crop_size: int,
                  mode: str = "bicubic", antialias: bool = True) -> torch.Tensor:
    """Cut aligned crops ``(N, 3, S, S)`` float32 ``[0, 1]`` out of frames.

    ``frames``: list of ``(3, H, W)`` float ``[0, 1]`` tensors (sizes may differ) or a
    ``(B, 3, H, W)`` tensor. ``transforms``: ``(N, 2, 3)`` frame -> crop pixels. ``frame_index``:
    ``(N,)`` ints, the frame of each crop. Only each face's region of its frame is read (so a
    12000x9000 photo costs what a small one does); a face much larger than the crop is first
    box-downscaled by an integer factor (anti-aliasing, bounded cost). All faces are warped with
    one kornia ``warp_affine`` call; outside the frame the border is replicated (as CelebA).
    ``mode``: ``"bicubic"`` (CelebA used cubic; output clamped to [0, 1]) or ``"bilinear"``.

    >>> fr = torch.rand(3, 40, 50)
    >>> M = torch.tensor([[[1., 0., -5.], [0., 1., -7.]]])      # translate: crop = frame[7:23, 5:21]
    >>> c = warp_to_crops([fr], M, [0], 16)
    >>> c.shape, bool(torch.allclose(c[0], fr[:, 7:23, 5:21], atol=1e-5))
    (torch.Size([1, 3, 16, 16]), True)
    """
    import kornia.geometry.transform as KT

    fl = _frame_list(frames)
    n = transforms.shape[0]
    dev = fl[0].device if fl else transforms.device
    if n == 0:
        return torch.zeros(0, 3, crop_size, crop_size, device=dev)
    idx = [int(i) for i in (frame_index.tolist() if isinstance(frame_index, torch.Tensor) else frame_index)]
    if len(idx) != n:
        raise InputError(None, f"frame_index has {len(idx)} entries for {n} transforms")
    if min(idx) < 0 or max(idx) >= len(fl):
        raise InputError(None, f"frame_index out of range for {len(fl)} frames")
    M = transforms.to(torch.float64).cpu()
    # crop pixels per frame pixel; faces shrunk by more than 2x are box-filtered by k first
    scale = torch.sqrt(torch.abs(torch.linalg.det(M[:, :, :2]))).tolist()
    ks = [math.floor(1.0 / s) if antialias and s < 0.5 else 1 for s in scale]
    regions = crop_regions(M, crop_size, [tuple(fl[i].shape[-2:]) for i in idx], [2 * k + 2 for k in ks])
    rois, mats = [], []
    for j in range(n):
        x0, y0, x1, y1 = regions[j]
        fr = fl[idx[j]]
        k = ks[j]
        if k > 1:
            # keep whole k x k blocks; at the frame's far edge drop the remainder (<k px)
            w, h = x1 - x0, y1 - y0
            if w >= k and h >= k:
                x1, y1 = x0 + (w // k) * k, y0 + (h // k) * k
            else:
                k = 1
        roi = fr[:, y0:y1, x0:x1]
        if roi.dtype != torch.float32:
            roi = roi.float()
        # p_frame = k * q + (k - 1) / 2 + (x0, y0)   (q: pixel of the box-filtered region)
        off = torch.tensor([x0 + (k - 1) / 2.0, y0 + (k - 1) / 2.0], dtype=torch.float64)
        A = M[j, :, :2]
        t = M[j, :, 2] + A @ off
        if k > 1:
            roi = F.avg_pool2d(roi[None], k)[0]
        mats.append(torch.cat([A * k, t[:, None]], dim=1))
        rois.append(roi)
    hmax = max(r.shape[-2] for r in rois)
    wmax = max(r.shape[-1] for r in rois)
    # pad to a common size by replicating the last row/column: identical to warping the unpadded
    # region with border replication
    batch = torch.stack([
        r if r.shape[-2:] == (hmax, wmax) else F.pad(r[None], (0, wmax - r.shape[-1], 0, hmax - r.shape[-2]),
                                                     mode="replicate")[0]
        for r in rois
    ])
    Ms = torch.stack(mats).to(device=batch.device, dtype=torch.float32)
    out = KT.warp_affine(batch, Ms, dsize=(crop_size, crop_size), mode=mode, padding_mode="border",
                         align_corners=True)
    return out.clamp_(0.0, 1.0) if mode == "bicubic" else out


def crop_faces(frames, faces: Sequence[Sequence], crop_size: int,
               template: Mapping[str, Sequence[float]] = CELEBA_TEMPLATE, **warp_options):
    """Align every face of every frame in one batch.

    ``frames``: list of ``(3, H, W)`` float ``[0, 1]`` tensors (or a ``(B, 3, H, W)`` tensor);
    ``faces``: per frame a list of :class:`starcli.detect.Face`. Returns ``(crops (N, 3, S, S),
    transforms (N, 2, 3) frame -> crop pixels, frame_index (N,) int64)`` in frame order, then
    face order. ``warp_options`` go to :func:`warp_to_crops`.

    >>> from starcli.detect import Face
    >>> import numpy as np
    >>> lm = {"left_eye": (20.0, 30.0), "right_eye": (40.0, 30.0), "nose": (30.0, 40.0)}
    >>> crops, M, idx = crop_faces([torch.rand(3, 64, 64)], [[Face((0, 0, 64, 64), 1.0, lm, np.zeros((5, 2)))]], 32)
    >>> crops.shape, M.shape, idx.tolist()
    (torch.Size([1, 3, 32, 32]), torch.Size([1, 2, 3]), [0])
    """
    flat = [f for fs in faces for f in fs]
    index = torch.tensor([i for i, fs in enumerate(faces) for _ in fs], dtype=torch.int64)
    if not flat:
        return torch.zeros(0, 3, crop_size, crop_size), torch.zeros(0, 2, 3), index
    pts, tpl = face_points(flat, template)
    transforms = estimate_transforms(pts, tpl, crop_size)
    return warp_to_crops(frames, transforms, index, crop_size, **warp_options), transforms, index
