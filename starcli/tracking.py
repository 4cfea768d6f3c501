"""Face tracks across video frames: association, one-euro smoothing, bridging, scene cuts.

Conventions (docs/architecture.md): frames are RGB ``uint8`` ``(H, W, 3)`` numpy arrays; faces are
:class:`starcli.detect.Face` records in frame pixels (``(x, y)``, origin top-left, pixel centres
at integers); time is ``frame_index / fps`` seconds.

Per frame, :meth:`FaceTracker.update` takes the detector's faces (or ``None`` on frames where the
detector was not run) and returns one :class:`TrackedFace` per live track:

1. *Scene cuts* (a colour-histogram jump larger than ``scene_cut``) end every track.
2. *Association*: detections are matched to tracks greedily by box IoU (>= ``iou_threshold``),
   then by centre distance (< ``max_centre_distance`` face sizes) for fast motion; sizes must
   agree within 2x.  Unmatched detections start tracks (faces entering).
3. *Smoothing*: each track filters its landmarks and box with a one-euro filter (Casiez et al.
   2012) in units of the face's size, so the parameters do not depend on resolution:
   ``min_cutoff`` (Hz) sets the smoothing of a still face, ``beta`` how fast the cutoff opens
   with speed (face sizes per second), so moving faces do not lag.  One speed (the RMS over all
   coordinates) drives the cutoff, so all points of a face move rigidly together.
4. *Bridging*: a track without a detection keeps its face, extrapolated with the filter's
   velocity, for up to ``max_missed`` frames (``bridged=True``); then it ends (face leaving).

>>> import numpy as np
>>> from starcli.detect import Face, box_iou
>>> f = Face((10., 10., 50., 50.), 1.0, {"left_eye": (20., 25.), "right_eye": (40., 25.)}, np.zeros((0, 2)))
>>> tr = FaceTracker(TrackerConfig(), fps=25)
>>> [t.track_id for t in tr.update(0, [f])], [t.bridged for t in tr.update(1, [])]
([1], [True])
>>> tr.update(2, []), tr.update(3, []) == []
([TrackedFace(track_id=1, bridged=True)], True)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from starcli.detect import Face, box_iou
from starcli.errors import ConfigError

__all__ = ["TrackerConfig", "OneEuroFilter", "SceneCutDetector", "TrackedFace", "FaceTracker",
           "box_iou", "alignment_jitter"]


@dataclass
class TrackerConfig:
    """Tracking and smoothing parameters (``[video]`` config keys of the same names).

    ``smooth``: filter landmarks (False: raw detections, still tracked and bridged).
    ``min_cutoff`` (Hz): cutoff of a still face; lower = smoother, more lag on slow drifts.
    ``beta``: cutoff increase per unit of speed (face sizes / second); higher = less lag in motion.
    ``d_cutoff`` (Hz): cutoff of the speed estimate.  ``max_missed``: frames a track survives
    without detection.  ``iou_threshold`` / ``max_centre_distance``: association gates.
    ``scene_cut``: histogram distance (0..1, total variation) above which tracks are reset;
    0 disables cut detection.  ``min_hits``: detections before a track is reported.
    """

    smooth: bool = True
    min_cutoff: float = 0.5
    beta: float = 20.0
    d_cutoff: float = 1.0
    max_missed: int = 2
    iou_threshold: float = 0.3
    max_centre_distance: float = 0.6
    scene_cut: float = 0.2
    min_hits: int = 1

    @classmethod
    def from_config(cls, section: Any = None) -> TrackerConfig:
        """From a mapping or any object with (some of) these attribute names; others are ignored."""
        if section is None:
            return cls()
        if isinstance(section, TrackerConfig):
            return section
        src = section if isinstance(section, Mapping) else (
            dataclasses.asdict(section) if dataclasses.is_dataclass(section) else vars(section))
        kwargs = {f.name: src[f.name] for f in dataclasses.fields(cls) if f.name in src}
        cfg = cls(**kwargs)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        for key in ("min_cutoff", "d_cutoff"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"video.{key}: must be > 0, got {getattr(self, key)!r}")
        if self.beta < 0:
            raise ConfigError(f"video.beta: must be >= 0, got {self.beta!r}")
        if self.max_missed < 0 or self.min_hits < 1:
            raise ConfigError("video.max_missed must be >= 0 and video.min_hits >= 1")
        if not 0 <= self.scene_cut <= 1:
            raise ConfigError(f"video.scene_cut: must be in [0, 1], got {self.scene_cut!r}")


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """One-euro low-pass filter of a vector signal sampled at times ``t`` (seconds).

    The cutoff is ``min_cutoff + beta * speed`` with ``speed`` the RMS of the filtered derivative
    over the vector's components (shared, so a rigid set of points stays rigid).

    >>> f = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    >>> [round(float(f(np.array([x]), t)[0]), 3) for t, x in enumerate([0.0, 1.0, 1.0])]
    [0.0, 0.863, 0.981]
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0):
        self.min_cutoff, self.beta, self.d_cutoff = float(min_cutoff), float(beta), float(d_cutoff)
        self.x: np.ndarray | None = None
        self.dx: np.ndarray | None = None
        self.t: float | None = None

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self.x is None or self.t is None or t <= self.t:
            self.x, self.dx, self.t = x.copy(), np.zeros_like(x), float(t)
            return x.copy()
        dt = t - self.t
        dx = (x - self.x) / dt
        self.dx = self.dx + _alpha(self.d_cutoff, dt) * (dx - self.dx)
        speed = float(np.sqrt(np.mean(self.dx**2)))
        a = _alpha(self.min_cutoff + self.beta * speed, dt)
        self.x = self.x + a * (x - self.x)
        self.t = float(t)
        return self.x.copy()

    def predict(self, t: float) -> np.ndarray:
        """Extrapolate the last value to time ``t`` with the filtered velocity."""
        assert self.x is not None and self.t is not None and self.dx is not None
        return self.x + self.dx * (t - self.t)


class SceneCutDetector:
    """Flags a frame whose colour histogram differs from the previous frame's by more than
    ``threshold`` (total variation distance, 0..1; 16 bins per channel on a subsampled frame,
    ~0.2 ms per 720p frame)."""

    def __init__(self, threshold: float = 0.2, bins: int = 16, side: int = 96):
        self.threshold, self.bins, self.side = float(threshold), int(bins), int(side)
        self.prev: np.ndarray | None = None

    def histogram(self, frame: np.ndarray) -> np.ndarray:
        h, w = frame.shape[:2]
        step = max(1, int(max(h, w) // self.side))
        small = frame[::step, ::step].reshape(-1, frame.shape[-1]).astype(np.int32) * self.bins // 256
        hist = np.stack([np.bincount(small[:, c], minlength=self.bins) for c in range(small.shape[1])])
        return hist / max(1, small.shape[0])

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        return float(0.5 * np.abs(a - b).sum(axis=1).mean())

    def update(self, frame: np.ndarray) -> bool:
        hist = self.histogram(frame)
        cut = self.prev is not None and self.threshold > 0 and self.distance(hist, self.prev) > self.threshold
        self.prev = hist
        return bool(cut)

    def reset(self) -> None:
        self.prev = None


@dataclass
class TrackedFace:
    """A face of one frame as seen by its track.  ``face`` holds the smoothed (or, when
    ``bridged``, extrapolated) box and landmarks; ``detection`` the raw detection (None when
    bridged)."""

    track_id: int
    face: Face = field(repr=False)
    detection: Face | None = field(default=None, repr=False)
    bridged: bool = False


class _Track:
    def __init__(self, track_id: int, face: Face, t: float, cfg: TrackerConfig):
        self.id = track_id
        self.names = tuple(sorted(face.landmarks))
        self.scale = max(face.size, 1.0)
        self.filter = OneEuroFilter(cfg.min_cutoff, cfg.beta, cfg.d_cutoff)
        self.hits = 0
        self.missed = 0
        self.last = face
        self.smooth = cfg.smooth
        self.value = self.filter(self._vector(face), t)

    def _vector(self, face: Face) -> np.ndarray:
        v = [*face.box] + [c for n in self.names for c in face.landmarks[n]]
        return np.asarray(v, dtype=np.float64) / self.scale

    def _face(self, v: np.ndarray, template: Face) -> Face:
        v = v * self.scale
        box = tuple(float(c) for c in v[:4])
        lms = {n: (float(v[4 + 2 * i]), float(v[5 + 2 * i])) for i, n in enumerate(self.names)}
        # raw points move with the box centre (they are not used for alignment)
        shift = np.array([(box[0] + box[2] - template.box[0] - template.box[2]) / 2,
                          (box[1] + box[3] - template.box[1] - template.box[3]) / 2])
        pts = np.asarray(template.points, dtype=np.float64).reshape(-1, 2) + shift
        return Face(box, template.score, lms, pts)  # type: ignore[arg-type]

    def predicted_box(self, t: float) -> tuple[float, float, float, float]:
        v = self.filter.predict(t) * self.scale
        return tuple(float(c) for c in v[:4])  # type: ignore[return-value]

    def observe(self, face: Face, t: float) -> Face:
        self.hits += 1
        self.missed = 0
        if tuple(sorted(face.landmarks)) != self.names:  # a detector gave other points: restart
            self.names = tuple(sorted(face.landmarks))
            self.filter = OneEuroFilter(self.filter.min_cutoff, self.filter.beta, self.filter.d_cutoff)
        self.value = self.filter(self._vector(face), t)
        self.last = face
        return self._face(self.value, face) if self.smooth else face

    def coast(self, t: float) -> Face:
        return self._face(self.filter.predict(t), self.last)


class FaceTracker:
    """Tracks faces through a video; see the module docstring for the steps.

    ``update(frame_index, faces, frame)``: ``faces`` are the detections of that frame (``None``:
    the detector was not run on it, every track is extrapolated without counting a miss);
    ``frame`` (RGB uint8) enables scene-cut detection.  Returns the frame's tracked faces,
    ordered by track id.  ``stats`` counts tracks, bridged frames and scene cuts.
    """

    def __init__(self, cfg: TrackerConfig | None = None, fps: float = 25.0):
        self.cfg = cfg or TrackerConfig()
        self.fps = float(fps)
        self.tracks: list[_Track] = []
        self.next_id = 1
        self.cuts = SceneCutDetector(self.cfg.scene_cut)
        self.stats = {"tracks": 0, "bridged": 0, "scene_cuts": 0}

    def reset(self) -> None:
        """End every track (scene cut, or a jump in time)."""
        self.tracks = []

    def _match(self, faces: Sequence[Face], t: float) -> tuple[dict[int, int], list[int]]:
        """Greedy matching: {track index: face index}, unmatched face indices."""
        cfg = self.cfg
        pairs = []
        for i, tr in enumerate(self.tracks):
            pb = tr.predicted_box(t)
            psize = max(math.sqrt(max(pb[2] - pb[0], 1e-6) * max(pb[3] - pb[1], 1e-6)), 1.0)
            pc = ((pb[0] + pb[2]) / 2, (pb[1] + pb[3]) / 2)
            for j, f in enumerate(faces):
                ratio = f.size / psize
                if not 0.5 <= ratio <= 2.0:
                    continue
                iou = box_iou(pb, f.box)
                fc = ((f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2)
                dist = math.hypot(fc[0] - pc[0], fc[1] - pc[1]) / psize
                if iou >= cfg.iou_threshold:
                    pairs.append((0, -iou, i, j))
                elif dist < cfg.max_centre_distance:
                    pairs.append((1, dist, i, j))
        pairs.sort()
        matched: dict[int, int] = {}
        used: set[int] = set()
        for _, _, i, j in pairs:
            if i in matched or j in used:
                continue
            matched[i] = j
            used.add(j)
        return matched, [j for j in range(len(faces)) if j not in used]

    def check_cut(self, frame: np.ndarray) -> bool:
        """Scene-cut test of ``frame`` (RGB uint8), the next frame of the video: on a cut every
        track ends.  :meth:`update` does this itself when given the frame; call this first
        instead when the cut decides how the frame is detected (then pass ``frame=None``)."""
        if self.cfg.scene_cut <= 0 or not self.cuts.update(frame):
            return False
        if self.tracks:
            self.reset()
        self.stats["scene_cuts"] += 1
        return True

    def predicted_boxes(self, frame_index: int) -> list[tuple[float, float, float, float]]:
        """Where each live track expects its face on ``frame_index``: boxes ``(x0, y0, x1, y1)``
        in pixels (the regions a video detector searches between full-frame detections)."""
        t = frame_index / self.fps
        return [tr.predicted_box(t) for tr in self.tracks]

    def update(self, frame_index: int, faces: Sequence[Face] | None, frame: np.ndarray | None = None) -> list[TrackedFace]:
        t = frame_index / self.fps
        if frame is not None:
            self.check_cut(frame)
        out: list[TrackedFace] = []
        if faces is None:  # detector not run on this frame: extrapolate every track
            for tr in self.tracks:
                if tr.hits >= self.cfg.min_hits:
                    out.append(TrackedFace(tr.id, tr.coast(t), None, True))
            return out
        matched, new = self._match(faces, t)
        alive = []
        for i, tr in enumerate(self.tracks):
            if i in matched:
                det = faces[matched[i]]
                face = tr.observe(det, t)
                if tr.hits >= self.cfg.min_hits:
                    out.append(TrackedFace(tr.id, face, det, False))
                alive.append(tr)
            else:
                tr.missed += 1
                if tr.missed <= self.cfg.max_missed:
                    if tr.hits >= self.cfg.min_hits:
                        out.append(TrackedFace(tr.id, tr.coast(t), None, True))
                        self.stats["bridged"] += 1
                    alive.append(tr)
        for j in new:
            tr = _Track(self.next_id, faces[j], t, self.cfg)
            self.next_id += 1
            self.stats["tracks"] += 1
            tr.hits = 1
            if tr.hits >= self.cfg.min_hits:
                out.append(TrackedFace(tr.id, faces[j], faces[j], False))
            alive.append(tr)
        self.tracks = alive
        out.sort(key=lambda tf: tf.track_id)
        return out


def alignment_jitter(transforms: Sequence[np.ndarray], template_points: np.ndarray, crop_size: int) -> float:
    """Mean frame-to-frame motion (frame pixels) of the template points mapped into the frame.

    ``transforms``: per frame one ``(2, 3)`` frame -> crop transform of the same face;
    ``template_points``: ``(K, 2)`` in normalised crop units (crop pixel = ``u * S - 0.5``).  On a
    still-camera clip the true motion is 0, so this is the alignment's jitter.
    """
    q = np.asarray(template_points, dtype=np.float64) * crop_size - 0.5
    prev, moves = None, []
    for m in transforms:
        m = np.asarray(m, dtype=np.float64).reshape(2, 3)
        p = np.linalg.solve(m[:, :2], (q - m[:, 2]).T).T  # crop -> frame
        if prev is not None:
            moves.append(np.linalg.norm(p - prev, axis=1).mean())
        prev = p
    return float(np.mean(moves)) if moves else 0.0
