"""Face detection: the :class:`Face` record, the :class:`Detector` protocol and :class:`DlibDetector`.

Conventions (see docs/architecture.md): images are RGB ``uint8`` numpy arrays ``(H, W, 3)``;
points are ``(x, y)`` pixels, origin top-left, pixel centres at integers. A detector is batched
over images of any sizes: ``detect([img, ...]) -> [[Face, ...], ...]``, faces sorted by size
(largest first), then top-left position, so results are deterministic.

Canonical landmark names (any subset a detector can give):

- ``left_eye`` / ``right_eye``: eye centres on the image's left / right side,
- ``nose``: base of the nose (dlib 5-point point 4),
- ``mouth``: mouth centre (mean of the two mouth corners).

Detectors may add other names (e.g. ``nose_tip``); templates ignore names they do not know.

>>> import numpy as np
>>> Face(box=(10.0, 20.0, 50.0, 60.0), score=1.0, landmarks={}, points=np.zeros((0, 2))).size
40.0
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from starcli.errors import ConfigError, InputError, PluginError

__all__ = [
    "LANDMARK_NAMES",
    "Detector",
    "DlibDetector",
    "Face",
    "add_new_faces",
    "box_iou",
    "check_images",
    "detect_in_regions",
    "dlib_model_path",
    "downscale_for_detection",
    "finish_faces",
]

LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth")


@dataclass
class Face:
    """One detected face, in the pixel coordinates of the image it was found in.

    ``box``: ``(x0, y0, x1, y1)`` float pixels (``x1 - x0`` is the width; may extend past the
    image border). ``score``: the detector's confidence (dlib: SVM margin; MTCNN: probability).
    ``landmarks``: canonical name -> ``(x, y)``. ``points``: the detector's raw landmark array
    ``(K, 2)`` float (dlib 5-point: 2 corners of each eye, nose base; MTCNN: eyes, nose tip,
    mouth corners).
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: dict[str, tuple[float, float]]
    points: np.ndarray = field(repr=False)

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    @property
    def size(self) -> float:
        """Side of the square with the box's area (pixels)."""
        return math.sqrt(max(self.width, 0.0) * max(self.height, 0.0))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: box, score, landmarks (lists of floats rounded to 0.01 px)."""
        return {
            "box": [round(float(v), 2) for v in self.box],
            "score": round(float(self.score), 4),
            "landmarks": {k: [round(float(x), 2), round(float(y), 2)] for k, (x, y) in self.landmarks.items()},
        }

    def shifted(self, dx: float, dy: float) -> Face:
        """The face moved by ``(dx, dy)`` pixels (from a crop back to the image it was cut from)."""
        x0, y0, x1, y1 = self.box
        pts = np.asarray(self.points, dtype=np.float64).reshape(-1, 2) + np.array([dx, dy])
        lms = {k: (x + dx, y + dy) for k, (x, y) in self.landmarks.items()}
        return Face((x0 + dx, y0 + dy, x1 + dx, y1 + dy), self.score, lms, pts)

    def scaled(self, sx: float, sy: float) -> Face:
        """The face mapped from an image resized by ``(sx, sy)`` back to the original.

        A point ``p'`` in the resized image maps to ``(p' + 0.5) / s - 0.5`` (pixel centres at
        integers); box edges map to ``e' / s``.
        """
        x0, y0, x1, y1 = self.box
        pts = np.asarray(self.points, dtype=np.float64).reshape(-1, 2)
        pts = (pts + 0.5) / np.array([sx, sy]) - 0.5
        lms = {k: ((x + 0.5) / sx - 0.5, (y + 0.5) / sy - 0.5) for k, (x, y) in self.landmarks.items()}
        return Face((x0 / sx, y0 / sy, x1 / sx, y1 / sy), self.score, lms, pts)


@runtime_checkable
class Detector(Protocol):
    """What ``starcli.detectors`` entry points resolve to.

    ``detect(images)`` takes RGB ``uint8`` arrays ``(H, W, 3)`` of any sizes and returns, per
    image, its faces sorted largest first.
    """

    name: ClassVar[str]

    @classmethod
    def from_config(cls, section: dict[str, Any]) -> Detector: ...

    @classmethod
    def available(cls) -> tuple[bool, str]: ...

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Face]]: ...


# --------------------------------------------------------------------------------------------
# helpers shared by detectors (the MTCNN plugin uses them too)


def check_images(images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Validate a batch of RGB uint8 ``(H, W, 3)`` arrays; returns C-contiguous arrays.

    Raises :class:`InputError` (path ``None``) naming the index of a bad image.
    """
    if isinstance(images, np.ndarray):
        raise InputError(None, "detect() takes a list of (H, W, 3) uint8 images, not one array")
    out = []
    for i, img in enumerate(images):
        img = np.asarray(img)
        if img.ndim != 3 or img.shape[2] != 3:
            raise InputError(None, f"image {i}: expected an RGB array (H, W, 3), got shape {img.shape}")
        if img.dtype != np.uint8:
            raise InputError(None, f"image {i}: expected uint8 pixels, got {img.dtype}")
        if img.shape[0] < 1 or img.shape[1] < 1:
            raise InputError(None, f"image {i}: empty image {img.shape}")
        out.append(np.ascontiguousarray(img))
    return out


def downscale_for_detection(img: np.ndarray, max_side: int | None) -> tuple[np.ndarray, float, float]:
    """Shrink ``img`` so its longer side is at most ``max_side`` (area-averaged).

    Returns ``(small, sx, sy)`` with ``sx = small_w / w``; ``(img, 1, 1)`` when no resize is
    needed. Cost is one pass over the image (Pillow's reducing resize).
    """
    h, w = img.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return img, 1.0, 1.0
    from PIL import Image

    f = max_side / max(h, w)
    nw, nh = max(1, round(w * f)), max(1, round(h * f))
    small = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BILINEAR, reducing_gap=2.0))
    return np.ascontiguousarray(small), nw / w, nh / h


def finish_faces(faces: list[Face], min_face_size: float = 0.0, largest_only: bool = False) -> list[Face]:
    """Filter by ``min_face_size`` (pixels, :attr:`Face.size`), sort largest first (ties: top,
    then left), and keep only the first when ``largest_only``."""
    faces = [f for f in faces if f.size >= min_face_size]
    faces.sort(key=lambda f: (-round(f.size, 3), round(f.box[1], 3), round(f.box[0], 3), -f.score))
    return faces[:1] if largest_only else faces


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``(x0, y0, x1, y1)`` boxes.

    >>> box_iou((0, 0, 2, 2), (1, 0, 3, 2))
    0.3333333333333333
    """
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def add_new_faces(kept: list[Face], found: Sequence[Face], max_iou: float = 0.3) -> list[Face]:
    """``kept`` plus the faces of ``found`` that overlap none of them (IoU <= ``max_iou``): video
    keeps tracked faces from their regions and adds only new ones from a whole-frame search."""
    return kept + [f for f in found if all(box_iou(f.box, k.box) <= max_iou for k in kept)]


#: Pixel grid of the regions searched by :func:`detect_in_regions`.
REGION_GRID = 32


def detect_in_regions(detector: Detector, image: np.ndarray, boxes: Sequence[Sequence[float]], *, margin: float = 0.75,
                      face_side: float = 0.0) -> list[Face]:
    """Faces found by ``detector`` inside square regions around ``boxes`` of ``image``.

    For video: the predicted boxes of tracked faces give regions ``(1 + 2 * margin)`` face sizes
    wide (clamped to the image), far fewer pixels than the frame, so a tracked face costs a
    fraction of a full-frame detection.  ``face_side`` > 0 also shrinks each region so that its
    face is about that many pixels wide (never enlarges), which bounds the cost of large faces;
    a detector with ``refine(image, faces)`` (dlib) then recomputes the landmarks on the
    full-resolution image.  Region edges lie on a :data:`REGION_GRID` pixel grid and shrink
    factors on quarter octaves, so a still face is searched in exactly the same pixels on every
    frame and its landmarks jitter no more than with whole-frame detection.  Faces are returned
    in ``image`` pixels; a face seen by two overlapping regions (IoU > 0.5) is kept once (the
    higher score); sorted as :func:`finish_faces`.
    """
    from PIL import Image

    h, w = image.shape[:2]
    crops, offsets = [], []
    for x0, y0, x1, y1 in boxes:
        size = max(x1 - x0, y1 - y0)
        side = size * (1.0 + 2.0 * margin)
        cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
        # region edges on a coarse grid: a still face keeps exactly the same region (and the
        # detector's scan grid) from frame to frame, so its landmarks do not jitter more than
        # with whole-frame detection
        q = REGION_GRID
        l, t = max(0, int(math.floor((cx - side / 2) / q)) * q), max(0, int(math.floor((cy - side / 2) / q)) * q)
        r, b = min(w, int(math.ceil((cx + side / 2) / q)) * q), min(h, int(math.ceil((cy + side / 2) / q)) * q)
        if r - l < 16 or b - t < 16:
            continue
        crop = np.ascontiguousarray(image[t:b, l:r])
        # shrink on a ladder of quarter octaves: a face of steady size keeps the same factor
        f = 2.0 ** (math.floor(4.0 * math.log2(face_side / size)) / 4.0) if face_side > 0 and size > face_side else 1.0
        if f < 1.0:
            cw, ch = max(1, round((r - l) * f)), max(1, round((b - t) * f))
            crop = np.asarray(Image.fromarray(crop).resize((cw, ch), Image.BILINEAR, reducing_gap=2.0))
            crops.append(crop)
            offsets.append((l, t, cw / (r - l), ch / (b - t)))
        else:
            crops.append(crop)
            offsets.append((l, t, 1.0, 1.0))
    if not crops:
        return []
    found: list[Face] = []
    refine = getattr(detector, "refine", None)
    for faces, (l, t, sx, sy) in zip(detector.detect(crops), offsets):
        if (sx, sy) != (1.0, 1.0):
            faces = [face.scaled(sx, sy) for face in faces]
        faces = [face.shifted(l, t) for face in faces]
        if (sx, sy) != (1.0, 1.0) and refine is not None:
            faces = refine(image, faces)
        for face in faces:
            twin = next((i for i, g in enumerate(found) if box_iou(g.box, face.box) > 0.5), None)
            if twin is None:
                found.append(face)
            elif face.score > found[twin].score:
                found[twin] = face
    return finish_faces(found)


def _check_options(cls_name: str, section: dict[str, Any], spec: dict[str, tuple[type, ...]]) -> dict[str, Any]:
    """Validate a config section against ``{key: accepted types}``; raise ConfigError naming the key."""
    out = {}
    for key, value in section.items():
        if key in ("detector", "name"):
            continue
        if key not in spec:
            raise ConfigError(f"detect.{key}: unknown option for detector {cls_name!r} (known: {', '.join(sorted(spec))})")
        types = spec[key]
        if isinstance(value, bool) and bool not in types:
            raise ConfigError(f"detect.{key}: expected {'/'.join(t.__name__ for t in types)}, got {value!r}")
        if value is not None and not isinstance(value, types):
            raise ConfigError(f"detect.{key}: expected {'/'.join(t.__name__ for t in types)}, got {value!r}")
        out[key] = value
    return out


def dlib_model_path(filename: str) -> str | None:
    """Path of a model file inside the ``face_recognition_models`` package, or ``None``.

    The package is located with ``importlib.util.find_spec`` and never imported (its
    ``__init__`` needs ``pkg_resources``).
    """
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        path = os.path.join(loc, "models", filename)
        if os.path.isfile(path):
            return path
    return None


# --------------------------------------------------------------------------------------------
# dlib


@functools.lru_cache(maxsize=4)
def _dlib_predictor(predictor_path: str):
    """A dlib shape predictor, loaded once per process. dlib documents shape predictors as safe
    to use from several threads at once; its HOG detector is not, so each thread builds its own
    (:meth:`DlibDetector._hog`)."""
    import dlib

    return dlib.shape_predictor(predictor_path)


class DlibDetector:
    """dlib's HOG frontal face detector + the 5-point landmark model (``face-recognition-models``).

    Options (``[detect]`` config keys):

    - ``upsample`` (int, default 0): image doublings before detection. 0 finds faces from about
      80 px; 1 finds faces from about 40 px at ~4x the time (see docs/detectors.md).
    - ``min_face_size`` (px, default 0): drop smaller faces (:attr:`Face.size`).
    - ``largest_only`` (bool, default False): keep only the largest face per image.
    - ``max_side`` (px, default 2048): images with a longer side are downscaled for detection
      (boxes and landmarks are mapped back; landmarks are then refined at full resolution).
    - ``threshold`` (float, default 0.0): dlib's detection score threshold adjustment.

    Landmarks: ``left_eye`` / ``right_eye`` (mean of the two corners of each eye), ``nose``
    (nose base); ``points`` is the raw ``(5, 2)`` array.

    ``thread_safe``: ``detect`` may be called from several threads at once (each thread gets
    its own HOG detector; the landmark model is shared; dlib releases the GIL while it runs).
    """

    name: ClassVar[str] = "dlib"
    thread_safe: ClassVar[bool] = True  # one HOG detector per thread; dlib releases the GIL
    PREDICTOR_FILE: ClassVar[str] = "shape_predictor_5_face_landmarks.dat"
    OPTIONS: ClassVar[dict[str, tuple[type, ...]]] = {
        "upsample": (int,),
        "min_face_size": (int, float),
        "largest_only": (bool,),
        "max_side": (int,),
        "threshold": (int, float),
    }

    def __init__(
        self,
        upsample: int = 0,
        min_face_size: float = 0.0,
        largest_only: bool = False,
        max_side: int | None = 2048,
        threshold: float = 0.0,
    ):
        if not isinstance(upsample, int) or isinstance(upsample, bool) or not 0 <= upsample <= 3:
            raise ConfigError(f"detect.upsample: expected an integer 0..3, got {upsample!r}")
        if min_face_size < 0:
            raise ConfigError(f"detect.min_face_size: must be >= 0, got {min_face_size!r}")
        if max_side is not None and max_side < 64:
            raise ConfigError(f"detect.max_side: must be >= 64, got {max_side!r}")
        ok, why = self.available()
        if not ok:
            raise PluginError(f"detector 'dlib' cannot run: {why}")
        import dlib

        self._predictor = _dlib_predictor(dlib_model_path(self.PREDICTOR_FILE))
        self._local = threading.local()
        self.upsample = upsample
        self.min_face_size = float(min_face_size)
        self.largest_only = bool(largest_only)
        self.max_side = max_side
        self.threshold = float(threshold)
        self._dlib = dlib

    @classmethod
    def from_config(cls, section: dict[str, Any]) -> DlibDetector:
        return cls(**_check_options(cls.name, dict(section), cls.OPTIONS))

    @classmethod
    def available(cls) -> tuple[bool, str]:
        if importlib.util.find_spec("dlib") is None:
            return False, "dlib is not installed: pip install dlib-bin"
        if dlib_model_path(cls.PREDICTOR_FILE) is None:
            return False, f"{cls.PREDICTOR_FILE} not found: pip install face-recognition-models"
        return True, ""

    def __repr__(self) -> str:
        return (
            f"DlibDetector(upsample={self.upsample}, min_face_size={self.min_face_size}, "
            f"largest_only={self.largest_only}, max_side={self.max_side}, threshold={self.threshold})"
        )

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        """Faces per image. ``images``: list of RGB uint8 ``(H, W, 3)`` arrays, any sizes."""
        return [self._detect_one(img) for img in check_images(images)]

    def _hog(self):
        """This thread's HOG detector (dlib's detector keeps scratch buffers: not shareable)."""
        hog = getattr(self._local, "hog", None)
        if hog is None:
            hog = self._local.hog = self._dlib.get_frontal_face_detector()
        return hog

    def _detect_one(self, img: np.ndarray) -> list[Face]:
        small, sx, sy = downscale_for_detection(img, self.max_side)
        rects, scores, _ = self._hog().run(small, self.upsample, self.threshold)
        faces = []
        for r, score in zip(rects, scores):
            # dlib rectangles are inclusive: right/bottom are the last pixel inside the box.
            x0, y0, x1, y1 = r.left(), r.top(), r.right() + 1.0, r.bottom() + 1.0
            x0, y0, x1, y1 = x0 / sx, y0 / sy, x1 / sx, y1 / sy
            if x1 <= 0 or y1 <= 0 or x0 >= img.shape[1] or y0 >= img.shape[0]:
                continue
            faces.append(self._shape(img, (x0, y0, x1, y1), float(score)))
        return finish_faces(faces, self.min_face_size, self.largest_only)

    def _shape(self, img: np.ndarray, box: tuple[float, float, float, float], score: float) -> Face:
        """The face with landmarks from the shape predictor run on ``img`` (full resolution: it
        samples pixels relative to the box)."""
        x0, y0, x1, y1 = box
        shape = self._predictor(img, self._dlib.rectangle(round(x0), round(y0), round(x1) - 1, round(y1) - 1))
        pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
        return Face((x0, y0, x1, y1), score, self._landmarks(pts), pts)

    def refine(self, image: np.ndarray, faces: Sequence[Face]) -> list[Face]:
        """``faces`` (found on a downscaled copy, mapped to ``image`` pixels) with landmarks
        recomputed on ``image`` (RGB uint8 ``(H, W, 3)``), the accuracy of a full-size detection."""
        img = check_images([image])[0]
        return [self._shape(img, f.box, f.score) for f in faces]

    @staticmethod
    def _landmarks(pts: np.ndarray) -> dict[str, tuple[float, float]]:
        # dlib 5-point model: 0-1 corners of the eye on the image's right (the subject's left),
        # 2-3 corners of the eye on the image's left, 4 the base of the nose (upright faces).
        right = pts[0:2].mean(axis=0)
        left = pts[2:4].mean(axis=0)
        return {
            "left_eye": (float(left[0]), float(left[1])),
            "right_eye": (float(right[0]), float(right[1])),
            "nose": (float(pts[4, 0]), float(pts[4, 1])),
        }
