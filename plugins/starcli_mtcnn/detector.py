"""MTCNN (Zhang et al. 2016) in plain torch, with the weights shipped in ``facenet-pytorch``.

Three cascaded networks: P-Net scans an image pyramid for 12x12 face windows, R-Net (24x24) and
O-Net (48x48) re-score and refine the candidates; O-Net also gives 5 landmarks (both eye
centres, nose tip, both mouth corners). Candidates of all images in a batch go through R-Net and
O-Net together.

Landmark names: ``left_eye``, ``right_eye`` (eye centres on the image's left / right side),
``mouth`` (mean of the corners), plus ``nose_tip``, ``mouth_left``, ``mouth_right``. MTCNN's nose
point is the tip, not the base that the canonical ``nose`` means, so it is not reported as
``nose``; alignment then uses the eyes and mouth, exactly CelebA's three points.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from starcli.detect import Face, _check_options, check_images, downscale_for_detection, finish_faces
from starcli.errors import ConfigError, PluginError

__all__ = ["MtcnnDetector", "ONet", "PNet", "RNet", "weights_dir"]

INSTALL_HINT = "pip install --no-deps facenet-pytorch"


def weights_dir() -> str | None:
    """Folder holding ``pnet.pt``, ``rnet.pt``, ``onet.pt`` inside ``facenet_pytorch``, or None.

    Located with ``importlib.util.find_spec``; the package itself is never imported.
    """
    try:
        spec = importlib.util.find_spec("facenet_pytorch")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        d = os.path.join(loc, "data")
        if all(os.path.isfile(os.path.join(d, f"{n}.pt")) for n in ("pnet", "rnet", "onet")):
            return d
    return None


# ------------------------------------------------------------------------------------------------
# networks (parameter names match the shipped state dicts)


class PNet(nn.Module):
    """Proposal net: fully convolutional; per 12x12 window (stride 2) a face probability and a
    box regression ``(dx0, dy0, dx1, dy1)`` in window units."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)
        self.conv4_2 = nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return F.softmax(self.conv4_1(x), dim=1)[:, 1], self.conv4_2(x)


class RNet(nn.Module):
    """Refinement net on 24x24 crops: probability and box regression."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        # the dense weights expect features flattened in (width, height, channel) order
        x = self.prelu4(self.dense4(x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)))
        return F.softmax(self.dense5_1(x), dim=1)[:, 1], self.dense5_2(x)


class ONet(nn.Module):
    """Output net on 48x48 crops: probability, box regression and 5 landmarks
    ``(x1..x5, y1..y5)`` in box units."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)))
        return F.softmax(self.dense6_1(x), dim=1)[:, 1], self.dense6_2(x), self.dense6_3(x)


# ------------------------------------------------------------------------------------------------
# box helpers; boxes are (n, 4) float64 numpy arrays of edges x0, y0, x1, y1 (width = x1 - x0)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, min_mode: bool = False) -> np.ndarray:
    """Greedy non-maximum suppression; indices kept, best score first (ties: lower index).

    Overlap is intersection / union, or intersection / smaller area with ``min_mode``.
    """
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((np.arange(len(scores)), -scores))
    b = boxes[order]
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    iw = np.clip(np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    denom = np.minimum(area[:, None], area[None, :]) if min_mode else area[:, None] + area[None, :] - inter
    overlap = inter / np.maximum(denom, 1e-9)
    suppressed = np.zeros(len(b), dtype=bool)
    keep = []
    for i in range(len(b)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= overlap[i] > threshold
    return order[np.array(keep, dtype=np.int64)]


def regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Apply box regression ``(dx0, dy0, dx1, dy1)`` in units of the box size."""
    w = (boxes[:, 2] - boxes[:, 0])[:, None]
    h = (boxes[:, 3] - boxes[:, 1])[:, None]
    return boxes + reg * np.concatenate([w, h, w, h], axis=1)


def square(boxes: np.ndarray) -> np.ndarray:
    """Grow boxes to squares of their longer side around the same centre."""
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    s = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) / 2
    return np.stack([cx - s, cy - s, cx + s, cy + s], axis=1)


def crop_resize(img: torch.Tensor, boxes: np.ndarray, size: int, supersample: int = 3) -> torch.Tensor:
    """``(n, 3, size, size)`` area-like resampled crops of ``img (3, H, W)`` at ``boxes``.

    All boxes in one ``grid_sample`` call: each output pixel averages ``supersample`` x
    ``supersample`` bilinear samples (the nets were trained on area-resized crops); zeros outside.
    """
    n = len(boxes)
    _, h, w = img.shape
    k = supersample
    m = size * k
    b = torch.as_tensor(boxes, dtype=torch.float32)
    # sample centres of a box's m x m sub-pixel grid, in frame pixels (pixel centres at integers)
    t = (torch.arange(m, dtype=torch.float32) + 0.5) / m  # (m,)
    xs = b[:, 0:1] + t[None] * (b[:, 2:3] - b[:, 0:1]) - 0.5  # (n, m)
    ys = b[:, 1:2] + t[None] * (b[:, 3:4] - b[:, 1:2]) - 0.5
    gx = (2 * xs + 1) / w - 1  # align_corners=False normalisation
    gy = (2 * ys + 1) / h - 1
    grid = torch.stack([gx[:, None, :].expand(n, m, m), gy[:, :, None].expand(n, m, m)], dim=-1)
    grid = grid.reshape(1, n * m, m, 2)
    out = F.grid_sample(img[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    out = out.reshape(3, n, m, m).transpose(0, 1)
    return F.avg_pool2d(out, k) if k > 1 else out


# ------------------------------------------------------------------------------------------------


class MtcnnDetector:
    """MTCNN face detector with 5 landmarks (plugin ``mtcnn``).

    Options (``[detect]`` config keys):

    - ``min_face_size`` (px, default 0): drop smaller faces; also the smallest face searched
      (the pyramid's first scale) when above 20 px.
    - ``upsample`` (int, default 0; the key dlib also takes): search faces from ``20 / 2**upsample``
      px (at least 12 px, MTCNN's window) instead of 20 px.
    - ``thresholds`` (3 floats, default [0.6, 0.7, 0.7]): P-, R-, O-net probability thresholds.
    - ``threshold`` (float, default 0; the key dlib also takes): added to the O-net threshold
      (clamped to 0.05..0.99): positive for fewer, surer faces.
    - ``scale_factor`` (default 0.709): pyramid step.
    - ``largest_only`` (bool, default False), ``max_side`` (px, default 1600): as for dlib.
    - ``threads`` (int, default 1): torch threads during detection (0 = leave torch's setting).
      The nets' convolutions have few channels; on a 2-core machine with the other core busy
      one thread was 15x faster than two (13 vs 190 ms per P-Net pass).

    Images: list of RGB uint8 ``(H, W, 3)`` arrays. Boxes and landmarks are frame pixels.
    """

    name: ClassVar[str] = "mtcnn"
    OPTIONS: ClassVar[dict[str, tuple[type, ...]]] = {
        "min_face_size": (int, float),
        "upsample": (int,),
        "threshold": (int, float),
        "thresholds": (list, tuple),
        "scale_factor": (float,),
        "largest_only": (bool,),
        "max_side": (int,),
        "threads": (int,),
    }

    def __init__(self, min_face_size: float = 0.0, thresholds: Sequence[float] = (0.6, 0.7, 0.7),
                 scale_factor: float = 0.709, largest_only: bool = False, max_side: int | None = 1600,
                 threads: int = 1, upsample: int = 0, threshold: float = 0.0):
        if not min_face_size >= 0:
            raise ConfigError(f"detect.min_face_size: must be >= 0, got {min_face_size!r}")
        if isinstance(upsample, bool) or not isinstance(upsample, int) or not 0 <= upsample <= 3:
            raise ConfigError(f"detect.upsample: expected an integer 0..3, got {upsample!r}")
        if len(thresholds) != 3 or not all(0.0 <= float(t) < 1.0 for t in thresholds):
            raise ConfigError(f"detect.thresholds: expected 3 probabilities, got {thresholds!r}")
        if not 0.3 <= scale_factor <= 0.9:
            raise ConfigError(f"detect.scale_factor: expected 0.3..0.9, got {scale_factor!r}")
        if max_side is not None and max_side < 64:
            raise ConfigError(f"detect.max_side: must be >= 64, got {max_side!r}")
        ok, why = self.available()
        if not ok:
            raise PluginError(f"detector 'mtcnn' cannot run: {why}")
        self.min_face_size = float(min_face_size)
        self.upsample = int(upsample)
        self.search_size = max(12.0, float(min_face_size), 20.0 / 2**upsample)
        t = [float(v) for v in thresholds]
        t[2] = min(max(t[2] + float(threshold), 0.05), 0.99)
        self.thresholds = tuple(t)
        self.scale_factor = float(scale_factor)
        self.largest_only = bool(largest_only)
        self.max_side = max_side
        self.threads = int(threads)
        d = weights_dir()
        self.pnet, self.rnet, self.onet = PNet(), RNet(), ONet()
        for net, fname in ((self.pnet, "pnet.pt"), (self.rnet, "rnet.pt"), (self.onet, "onet.pt")):
            state = torch.load(os.path.join(d, fname), map_location="cpu", weights_only=True)
            net.load_state_dict(state, strict=True)
            net.eval().requires_grad_(False)
        self.pnet.to(memory_format=torch.channels_last)

    @classmethod
    def from_config(cls, section: dict[str, Any]) -> MtcnnDetector:
        return cls(**_check_options(cls.name, dict(section), cls.OPTIONS))

    @classmethod
    def available(cls) -> tuple[bool, str]:
        if weights_dir() is None:
            return False, f"MTCNN weights not found: {INSTALL_HINT}"
        return True, ""

    def __repr__(self) -> str:
        return (f"MtcnnDetector(min_face_size={self.min_face_size}, upsample={self.upsample}, "
                f"thresholds={self.thresholds}, "
                f"scale_factor={self.scale_factor}, largest_only={self.largest_only}, max_side={self.max_side})")

    # --------------------------------------------------------------------------------------------

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        """Faces per image, largest first. ``images``: RGB uint8 ``(H, W, 3)`` arrays, any sizes."""
        imgs = check_images(images)
        if not imgs:
            return []
        old = torch.get_num_threads()
        if self.threads and self.threads != old:
            torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                return self._detect(imgs)
        finally:
            if torch.get_num_threads() != old:
                torch.set_num_threads(old)

    def _detect(self, imgs: list[np.ndarray]) -> list[list[Face]]:
        smalls = [downscale_for_detection(im, self.max_side) for im in imgs]
        tensors = [torch.from_numpy(np.array(s, dtype=np.float32)).permute(2, 0, 1) for s, _, _ in smalls]
        # stage 1: P-Net over each image's pyramid
        cands = [self._propose(t) for t in tensors]
        # stage 2 and 3: R-Net and O-Net on the candidates of all images at once
        cands = self._refine(tensors, cands, self.rnet, 24, self.thresholds[1])
        results = self._output(tensors, cands)
        out = []
        for (small, sx, sy), faces in zip(smalls, results):
            if sx != 1.0 or sy != 1.0:
                faces = [f.scaled(sx, sy) for f in faces]
            out.append(finish_faces(faces, self.min_face_size, self.largest_only))
        return out

    def _scales(self, h: int, w: int) -> list[float]:
        m = 12.0 / self.search_size
        scales, side = [], min(h, w) * m
        s = m
        while side >= 12:
            scales.append(s)
            s *= self.scale_factor
            side *= self.scale_factor
        return scales

    def _propose(self, img: torch.Tensor) -> np.ndarray:
        """Candidate squares ``(n, 5)``: box edges and score, after P-Net and NMS."""
        _, h, w = img.shape
        found = []
        for s in self._scales(h, w):
            hs, ws = math.ceil(h * s), math.ceil(w * s)
            x = F.interpolate(img[None], size=(hs, ws), mode="bilinear", antialias=True, align_corners=False)
            prob, reg = self.pnet(((x - 127.5) * 0.0078125).contiguous(memory_format=torch.channels_last))
            prob, reg = prob[0].numpy(), reg[0].numpy()
            ys, xs = np.nonzero(prob >= self.thresholds[0])
            if len(ys) == 0:
                continue
            # window of output cell (i, j): scaled pixels [2j, 2j + 12) x [2i, 2i + 12)
            boxes = np.stack([2 * xs, 2 * ys, 2 * xs + 12, 2 * ys + 12], axis=1).astype(np.float64) / s
            # (the reference rescales by the actual size ratio; ceil() makes it ~s)
            score = prob[ys, xs].astype(np.float64)
            r = reg[:, ys, xs].T.astype(np.float64)
            keep = nms(boxes, score, 0.5)
            found.append(np.concatenate([boxes[keep], score[keep, None], r[keep]], axis=1))
        if not found:
            return np.zeros((0, 5))
        c = np.concatenate(found)
        keep = nms(c[:, :4], c[:, 4], 0.7)
        c = c[keep]
        boxes = square(regress(c[:, :4], c[:, 5:9]))
        return np.concatenate([boxes, c[:, 4:5]], axis=1)

    def _refine(self, imgs, cands, net, size, threshold) -> list[np.ndarray]:
        crops = [crop_resize(t, c[:, :4], size) for t, c in zip(imgs, cands) if len(c)]
        if not crops:
            return [np.zeros((0, 5)) for _ in cands]
        prob, reg = net((torch.cat(crops) - 127.5) * 0.0078125)[:2]
        prob, reg = prob.numpy().astype(np.float64), reg.numpy().astype(np.float64)
        out, k = [], 0
        for c in cands:
            p, r = prob[k:k + len(c)], reg[k:k + len(c)]
            k += len(c)
            sel = p >= threshold
            b, p, r = c[sel, :4], p[sel], r[sel]
            keep = nms(b, p, 0.7)
            boxes = square(regress(b[keep], r[keep]))
            out.append(np.concatenate([boxes, p[keep, None]], axis=1))
        return out

    def _output(self, imgs, cands) -> list[list[Face]]:
        # few candidates reach O-Net: sample them finely (k=2 let a 0.85 false positive through on astronaut)
        crops = [crop_resize(t, c[:, :4], 48, supersample=4) for t, c in zip(imgs, cands) if len(c)]
        if not crops:
            return [[] for _ in cands]
        prob, reg, lm = self.onet((torch.cat(crops) - 127.5) * 0.0078125)
        prob, reg, lm = (v.numpy().astype(np.float64) for v in (prob, reg, lm))
        out, k = [], 0
        for c in cands:
            p, r, l = prob[k:k + len(c)], reg[k:k + len(c)], lm[k:k + len(c)]
            k += len(c)
            sel = p >= self.thresholds[2]
            b, p, r, l = c[sel, :4], p[sel], r[sel], l[sel]
            # landmarks in box units (before regression), to pixel centres
            bw, bh = (b[:, 2] - b[:, 0])[:, None], (b[:, 3] - b[:, 1])[:, None]
            px = b[:, 0:1] + l[:, :5] * bw - 0.5
            py = b[:, 1:2] + l[:, 5:] * bh - 0.5
            b = regress(b, r)
            keep = nms(b, p, 0.7, min_mode=True)
            faces = []
            for i in keep:
                pts = np.stack([px[i], py[i]], axis=1)
                faces.append(Face(tuple(float(v) for v in b[i]), float(p[i]), self._landmarks(pts), pts))
            out.append(faces)
        return out

    @staticmethod
    def _landmarks(pts: np.ndarray) -> dict[str, tuple[float, float]]:
        # O-Net order: eye on the image's left, eye on the image's right, nose tip, mouth corner
        # on the image's left, mouth corner on the image's right
        def xy(p):
            return (float(p[0]), float(p[1]))

        return {
            "left_eye": xy(pts[0]),
            "right_eye": xy(pts[1]),
            "nose_tip": xy(pts[2]),
            "mouth_left": xy(pts[3]),
            "mouth_right": xy(pts[4]),
            "mouth": xy((pts[3] + pts[4]) / 2),
        }
