"""Compose the stages: read -> detect -> align -> translate -> paste -> write.

Two levels:

- :class:`Pipeline` holds the model, backend, detector and edits and offers the stages on
  *frame batches* (what the video pipeline reuses): :meth:`Pipeline.detect`,
  :meth:`Pipeline.align`, :meth:`Pipeline.translate`, :meth:`Pipeline.paste`, and the
  synchronous :meth:`Pipeline.process_frames` (frames in, edited frames out).
- :func:`process_paths` runs photos (files, folders, globs) through an *overlapped* pipeline:

  ``reader pool`` (``run.workers`` threads: decode + detect) -> ``aligner`` thread (batches
  photos up to ``run.batch_size`` faces, aligns all their faces with one transform fit and one
  warp, estimates their source attributes with the critic) -> **generator** (the calling thread: one :class:`~starcli.translate.FaceTranslator`
  call per batch) -> ``writer pool`` (``run.workers`` threads: paste + encode + atomic write).

  Bounds: at most ``run.queue_size`` photos are decoded ahead of the generator (plus at most
  two aligned batches waiting for it) and at most ``run.queue_size`` translated photos wait
  for their writer, so memory stays bounded while the generator never waits on I/O in steady
  state (the report gives its measured idle time). Batching: the aligner fills a batch up to
  ``run.batch_size`` faces while the generator is busy and flushes a partial batch as soon as
  the generator would otherwise be idle.

Conventions (docs/architecture.md): frames are RGB ``(H, W, 3)`` numpy ``uint8`` (or ``uint16``)
arrays; the stages use ``(3, h, w)`` float32 ``[0, 1]`` tensors of each photo's *face region*
only, so a 12000x9000 photo costs what its faces cost, and pixels outside the pasted masks are
bit-identical to the input. Transforms are ``(N, 2, 3)`` frame -> crop pixels.

Video files are routed to ``starcli.video.process_video(src, dst, pipeline, cfg)`` when that
function exists; otherwise they are reported as skipped ("video not supported yet").
"""

from __future__ import annotations

import glob
import importlib
import json
import os
import queue
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

from . import media
from .config import Config, load_config
from .errors import InputError, StarcliError

__all__ = [
    "Pipeline", "FrameJob", "FileResult", "RunReport", "Event", "PlanItem",
    "plan_inputs", "process_paths", "build_edits", "VIDEO_EXTENSIONS",
]

VIDEO_EXTENSIONS = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".gif"}
_DONE = object()


# ------------------------------------------------------------------------------------------------
# results and events


@dataclass
class FileResult:
    """What happened to one input: ``status`` is ``done``, ``skipped``, ``failed``, ``no_face``
    (written unchanged, ``run.no_face = "copy"``) or ``planned`` (dry run)."""

    input: str
    outputs: list[str] = field(default_factory=list)
    status: str = "planned"
    reason: str = ""
    kind: str = "photo"
    format: str = ""
    size: tuple[int, int] | None = None
    faces: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    extras: list[str] = field(default_factory=list)  # grid sheets, crops
    video: dict[str, Any] = field(default_factory=dict)  # frames, faces, fps, note (videos only)
    index: int = 0

    @property
    def line(self) -> str:
        """One line for humans: ``<input>: <reason>``."""
        return f"{self.input}: {self.reason}" if self.reason else f"{self.input}: {self.status}"


@dataclass
class Event:
    """Progress callback payload: ``kind`` is ``plan`` (``total`` files), ``file`` (a finished
    :class:`FileResult`), ``batch`` (``faces`` translated) or ``video`` (``video``: progress of
    the current video in frames)."""

    kind: str
    total: int = 0
    result: FileResult | None = None
    faces: int = 0
    video: Any = None  # kind "video": a starcli.video.VideoEvent (frames done/total, fps, ETA)


@dataclass
class RunReport:
    """Outcome of :func:`process_paths`: per-file results, counts, per-stage seconds
    (summed over threads), wall time and the generator's idle time."""

    files: list[FileResult] = field(default_factory=list)
    edits: list[str] = field(default_factory=list)
    model: str = ""
    backend: str = ""
    detector: str = ""
    wall_seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    generator_idle_seconds: float = 0.0
    generator_first_wait_seconds: float = 0.0
    batches: int = 0
    dry_run: bool = False

    def count(self, status: str) -> int:
        return sum(1 for f in self.files if f.status == status)

    @property
    def done(self) -> int:
        return self.count("done")

    @property
    def failed(self) -> int:
        return self.count("failed")

    @property
    def skipped(self) -> int:
        return self.count("skipped")

    @property
    def no_face(self) -> int:
        return self.count("no_face")

    @property
    def faces(self) -> int:
        """Faces edited: per photo, plus face instances over all frames of videos."""
        return sum(len(f.faces) + int(f.video.get("faces", 0)) for f in self.files if f.status == "done")

    @property
    def photos_per_second(self) -> float:
        photos = sum(1 for f in self.files if f.status == "done" and f.kind == "photo")
        return photos / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def faces_per_second(self) -> float:
        return self.faces / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "files": len(self.files), "done": self.done, "faces": self.faces, "skipped": self.skipped,
            "no_face": self.no_face, "failed": self.failed, "seconds": round(self.wall_seconds, 3),
            "photos_per_second": round(self.photos_per_second, 3), "faces_per_second": round(self.faces_per_second, 3),
            "generator_idle_seconds": round(self.generator_idle_seconds, 3),
            "generator_first_wait_seconds": round(self.generator_first_wait_seconds, 3),
            "batches": self.batches,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "backend": self.backend, "detector": self.detector, "edits": self.edits,
            "dry_run": self.dry_run, "summary": self.summary(),
            "stage_seconds": {k: round(v, 4) for k, v in self.stage_seconds.items()},
            "files": [_result_dict(f, self.edits) for f in self.files],
        }

    def write_json(self, path: str | Path) -> Path:
        return media.atomic_write_bytes(Path(path), (json.dumps(self.to_dict(), indent=1) + "\n").encode())


def _result_dict(r: FileResult, edits: Sequence[str] = ()) -> dict[str, Any]:
    d = asdict(r)
    d.pop("index", None)
    if r.outputs and len(r.outputs) == len(edits):
        d["edits"] = {label: out for label, out in zip(edits, r.outputs)}
    d["timings"] = {k: round(v, 5) for k, v in r.timings.items()}
    return d


# ------------------------------------------------------------------------------------------------
# the stages on frame batches


@dataclass
class FrameJob:
    """One frame (photo or video frame) moving through the stages.

    ``pixels``: ``(H, W, 3)`` uint8/uint16 RGB (never modified). ``faces``: detected
    :class:`~starcli.detect.Face` list. Filled by :meth:`Pipeline.align`: ``region`` (the frame
    box ``(x0, y0, x1, y1)`` holding every face), ``sub`` (``(3, h, w)`` float region),
    ``transforms`` (``(n, 2, 3)`` region -> crop pixels), ``crops`` (``(n, 3, S, S)``). Filled by
    :meth:`Pipeline.translate`: ``outputs`` (one ``(n, 3, S, S)`` per edit) and ``source`` labels.
    Filled by :meth:`Pipeline.paste`: ``results`` (one edited ``(H, W, 3)`` array per edit).
    """

    pixels: np.ndarray
    faces: list = field(default_factory=list)
    key: Any = None
    region: tuple[int, int, int, int] | None = None
    sub: torch.Tensor | None = None
    transforms: torch.Tensor | None = None
    frame_transforms: torch.Tensor | None = None
    crops: torch.Tensor | None = None
    outputs: list[torch.Tensor] = field(default_factory=list)
    source: torch.Tensor | None = None
    results: list[np.ndarray] = field(default_factory=list)
    aligned_input: bool = False


def build_edits(cfg: Config, spec) -> list:
    """The edits requested by ``translate.set`` (one edit) and ``translate.edits`` (one per
    string). Raises :class:`~starcli.errors.AttributeSpecError` listing the valid choices."""
    from .attributes import parse_settings

    edits = []
    if cfg.translate.set:
        edits.append(parse_settings(list(cfg.translate.set), spec))
    for text in cfg.translate.edits:
        edits.append(parse_settings([text], spec))
    if not edits:
        from .attributes import describe_choices
        from .errors import AttributeSpecError

        raise AttributeSpecError(f"nothing to change: give --set (e.g. --set hair=black) or --edit; valid settings are {describe_choices(spec)}")
    return edits


def edit_dirname(label: str) -> str:
    """Folder name for an edit label: ``hair=black,male`` -> ``hair-black+male``."""
    text = label.replace("=", "-").replace(",", "+")
    return re.sub(r"[^A-Za-z0-9_+\-]", "_", text) or "edit"


#: Faces searched in regions (video frames between full detections) are brought to about this
#: many pixels: dlib's HOG finds faces from ~80 px, so larger faces cost pixels, not accuracy.
REGION_FACE_SIDE = 120.0


class Pipeline:
    """Model + backend + detector + edits, and the stages on frame batches.

    ``model``, ``backend``, ``detector``, ``edits`` may be given (tests, applications);
    otherwise they are built from ``cfg`` (``translate.model`` or the default model,
    ``translate.backend``, ``detect.detector``, ``translate.set``/``translate.edits``).
    The detector is created lazily (``--aligned`` runs never need one).
    """

    def __init__(self, cfg: Config | None = None, *, model=None, backend=None, detector=None, edits=None):
        from . import models
        from .backends import make_backend
        from .translate import FaceTranslator

        self.cfg = cfg or load_config(None, search_cwd=False)
        tcfg = self.cfg.translate
        self.model = model if model is not None else models.load(tcfg.model or models.default_model_name())
        self.spec = self.model.spec
        self.edits = edits if edits is not None else build_edits(self.cfg, self.spec)
        if backend is None:
            section: dict[str, Any] = {"batch_size": self.cfg.run.batch_size}
            if tcfg.precision:
                section["precision"] = tcfg.precision
            if tcfg.threads:
                section["threads"] = tcfg.threads
            backend = make_backend(tcfg.backend, self.model, section)
        self.backend = backend
        self.translator = FaceTranslator(self.model, backend, self.edits, tcfg.source or "auto", tcfg.edit_mode or None, tcfg.strength)
        self.critic_seconds = 0.0  # time spent estimating source attributes (in translate)
        self._estimate_sources = self.translator.source_labels
        self._given_sources = threading.local()

        def source_labels(crops: torch.Tensor) -> torch.Tensor:
            given = getattr(self._given_sources, "labels", None)
            self._given_sources.labels = None
            if given is not None and len(given) == len(crops):
                return given  # estimated ahead of the generator by estimate_sources()
            t0 = time.perf_counter()
            try:
                return self._estimate_sources(crops)
            finally:
                self.critic_seconds += time.perf_counter() - t0

        self.translator.source_labels = source_labels  # type: ignore[method-assign]
        self.crop_size = int(self.spec.image_size)
        self.template = dict(self.spec.template.points)
        self._detector = detector
        self._detector_lock = threading.Lock()
        self._tls = threading.local()

    # -- detect -------------------------------------------------------------------------------
    @property
    def detector(self):
        if self._detector is None:
            from . import plugins

            d = self.cfg.detect
            cls = plugins.get(plugins.DETECTORS, d.detector)
            options = {"upsample": d.upsample, "min_face_size": d.min_face_size, "largest_only": d.largest_only,
                       "max_side": d.max_side, "threshold": d.threshold}
            self._detector = cls.from_config(options)
        return self._detector

    @property
    def detector_name(self) -> str:
        return getattr(self._detector, "name", None) or self.cfg.detect.detector

    def detect(self, frames: Sequence[np.ndarray]) -> list[list]:
        """Faces per frame; ``frames``: RGB ``(H, W, 3)`` uint8 (uint16 is reduced to 8 bits).

        Calls are serialised unless the detector declares ``thread_safe = True``. The time
        spent waiting for another thread's call is kept in ``detect_wait_seconds`` (per thread).
        """
        images = [media.to_uint8(f) for f in frames]
        return self._with_detector(lambda detector: detector.detect(images))

    def _with_detector(self, call: Callable[[Any], Any]) -> Any:
        """``call(detector)``, under the detector lock unless the detector is ``thread_safe``;
        the wait for the lock goes to ``detect_wait_seconds``."""
        detector = self.detector
        if getattr(detector, "thread_safe", False):
            self._tls.detect_wait_seconds = 0.0
            return call(detector)
        t0 = time.perf_counter()
        with self._detector_lock:
            self._tls.detect_wait_seconds = time.perf_counter() - t0
            return call(detector)

    def detect_regions(self, frame: np.ndarray, boxes: Sequence[Sequence[float]]) -> list:
        """Faces of ``frame`` found inside square regions around ``boxes`` (pixel ``(x0, y0, x1,
        y1)``, e.g. where tracked faces are expected): :func:`starcli.detect.detect_in_regions`
        with this pipeline's detector, serialised like :meth:`detect`."""
        if not boxes:
            return []
        from .detect import detect_in_regions

        # never shrink a face below what detect.min_face_size keeps
        side = max(REGION_FACE_SIDE, 1.5 * float(self.cfg.detect.min_face_size or 0.0))
        image = media.to_uint8(frame)
        return self._with_detector(lambda detector: detect_in_regions(detector, image, boxes, face_side=side))

    @property
    def detect_wait_seconds(self) -> float:
        """Seconds the calling thread's last :meth:`detect` waited for the detector lock."""
        return getattr(self._tls, "detect_wait_seconds", 0.0)

    # -- align --------------------------------------------------------------------------------
    def align(self, jobs: Sequence[FrameJob]) -> None:
        """Fill ``region``, ``sub``, ``transforms`` and ``crops`` of every job with faces.

        All faces of all jobs are fitted in one :func:`~starcli.align.estimate_transforms`
        call and cut in one :func:`~starcli.align.warp_to_crops` call.
        """
        from .align import crop_regions, estimate_transforms, face_points, warp_to_crops

        s = self.crop_size
        todo = [j for j in jobs if j.faces or j.aligned_input]
        if not todo:
            return
        mats: list[torch.Tensor] = []
        with_faces = [j for j in todo if not j.aligned_input]
        if with_faces:
            all_faces = [f for j in with_faces for f in j.faces]
            try:
                pts, tpl = face_points(all_faces, self.template)
                fitted = list(estimate_transforms(pts, tpl, s).split([len(j.faces) for j in with_faces]))
            except InputError:  # faces with different landmark sets: fit per frame
                fitted = [estimate_transforms(*face_points(j.faces, self.template), s) for j in with_faces]
            fit_of = {id(j): m for j, m in zip(with_faces, fitted)}
        for j in todo:
            h, w = j.pixels.shape[:2]
            if j.aligned_input:
                side = min(h, w)
                x0, y0 = (w - side) // 2, (h - side) // 2
                sc = s / side
                M = torch.tensor([[[sc, 0.0, 0.5 * sc - 0.5 - sc * x0], [0.0, sc, 0.5 * sc - 0.5 - sc * y0]]])
            else:
                M = fit_of[id(j)]
            scale = torch.sqrt(torch.abs(torch.linalg.det(M[:, :, :2].double()))).tolist()
            margins = [2 * (int(1.0 / sc) if sc < 0.5 else 1) + 4 for sc in scale]
            if j.aligned_input:
                regions = [(x0, y0, x0 + side, y0 + side)]
            else:
                regions = crop_regions(M, s, [(h, w)] * len(M), margins)
            rx0 = min(r[0] for r in regions)
            ry0 = min(r[1] for r in regions)
            rx1 = max(r[2] for r in regions)
            ry1 = max(r[3] for r in regions)
            j.region = (rx0, ry0, rx1, ry1)
            j.sub = media.to_tensor(j.pixels[ry0:ry1, rx0:rx1])
            shifted = M.clone()
            shifted[:, :, 2] += M[:, :, :2] @ torch.tensor([float(rx0), float(ry0)])
            j.frame_transforms = M
            j.transforms = shifted
        index = [k for k, j in enumerate(todo) for _ in range(len(j.transforms))]
        crops = warp_to_crops([j.sub for j in todo], torch.cat([j.transforms for j in todo]), index, s,
                              mode=self.cfg.align.mode)
        for j, c in zip(todo, crops.split([len(j.transforms) for j in todo])):
            j.crops = c

    # -- translate ----------------------------------------------------------------------------
    def estimate_sources(self, jobs: Sequence[FrameJob]) -> None:
        """Estimate the source attributes of every crop of ``jobs`` now (fills ``source``), so
        that :meth:`translate` skips it: the runner does this in the aligner thread, ahead of
        and in parallel with the generator. A no-op for models without a critic."""
        todo = [j for j in jobs if j.crops is not None and len(j.crops)]
        if not todo or not self.translator.use_critic:
            return
        labels = self._estimate_sources(torch.cat([j.crops for j in todo]))
        for j, src in zip(todo, labels.split([len(j.crops) for j in todo])):
            j.source = src

    def translate(self, jobs: Sequence[FrameJob]) -> int:
        """One :class:`~starcli.translate.FaceTranslator` call for every crop of ``jobs``;
        fills ``outputs`` and ``source``. Returns the number of faces translated."""
        todo = [j for j in jobs if j.crops is not None and len(j.crops)]
        if not todo:
            return 0
        crops = torch.cat([j.crops for j in todo])
        given = None
        if all(j.source is not None and len(j.source) == len(j.crops) for j in todo):
            given = torch.cat([j.source for j in todo])
        n = len(crops)
        size = self._bucket(n)
        if size > n:  # pad to a bucket size: engines that compile per input shape see few shapes
            crops = torch.cat([crops, crops[-1:].expand(size - n, -1, -1, -1)])
            if given is not None:
                given = torch.cat([given, given[-1:].expand(size - n, -1)])
        self._given_sources.labels = given
        result = self.translator(crops)
        if size > n:
            result.source = result.source[:n]
            result.outputs = [out[:n] for out in result.outputs]
        sizes = [len(j.crops) for j in todo]
        per_edit = [out.split(sizes) for out in result.outputs]
        for k, (j, src) in enumerate(zip(todo, result.source.split(sizes))):
            j.source = src
            j.outputs = [per_edit[e][k] for e in range(len(self.edits))]
        return n

    def _bucket(self, n: int) -> int:
        """Batch size to run ``n`` crops at: the next power of two, at most ``run.batch_size``
        (``run.pad_batches``); ``n`` itself when padding is off or ``n`` exceeds the cap."""
        cap = self.cfg.run.batch_size
        if not self.cfg.run.pad_batches or n >= cap:
            return n
        size = 1
        while size < n:
            size *= 2
        return min(size, cap)

    # -- paste --------------------------------------------------------------------------------
    def paste(self, job: FrameJob) -> list[np.ndarray]:
        """Edited frames for ``job``, one ``(H, W, 3)`` array (input dtype) per edit; pixels
        outside the faces' masks are the input's."""
        from .paste import paste_back

        if job.crops is None or not job.outputs:
            job.results = [job.pixels for _ in self.edits]
            return job.results
        x0, y0, x1, y1 = job.region
        pc = self.cfg.paste
        results = []
        for out in job.outputs:
            if job.aligned_input:
                edited = self._paste_square(job.sub, out[0], job.crops[0], job.transforms[0])
            else:
                edited = paste_back(job.sub, out, job.transforms, originals=job.crops, feather=pc.feather,
                                    colour_match=pc.colour_match, detail=pc.detail)
            frame = job.pixels.copy()
            frame[y0:y1, x0:x1] = media.from_tensor(edited, job.pixels.dtype)
            results.append(frame)
        job.results = results
        return results

    @staticmethod
    def _paste_square(sub: torch.Tensor, generated: torch.Tensor, original: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
        """Aligned-crop mode: the whole square gets ``sub + upsampled(generated - original)``."""
        import kornia.geometry.transform as KT

        from .align import invert_transforms

        inv = invert_transforms(M[None])
        h, w = sub.shape[-2:]
        delta = KT.warp_affine((generated - original)[None], inv, dsize=(h, w), mode="bilinear",
                               padding_mode="border", align_corners=True)[0]
        return (sub + delta).clamp_(0.0, 1.0)

    # -- all stages ---------------------------------------------------------------------------
    def process_frames(self, frames: Sequence[np.ndarray], faces: Sequence[list] | None = None) -> list[list[np.ndarray]]:
        """Synchronous stages on a frame batch: ``frames`` RGB ``(H, W, 3)`` uint8/uint16 ->
        per edit, the list of edited frames (``result[e][i]``). ``faces`` (per frame) skips
        detection (e.g. tracked and smoothed faces from a video)."""
        found = self.detect(frames) if faces is None else faces
        jobs = [FrameJob(pixels=f, faces=list(fs), key=i) for i, (f, fs) in enumerate(zip(frames, found))]
        self.align(jobs)
        self.translate(jobs)
        for j in jobs:
            self.paste(j)
        return [[j.results[e] for j in jobs] for e in range(len(self.edits))]


# ------------------------------------------------------------------------------------------------
# planning: inputs -> outputs


@dataclass
class PlanItem:
    """One input file and where its outputs go (one per edit)."""

    src: Path
    rel: Path
    kind: str  # photo | video | other
    outputs: list[Path] = field(default_factory=list)
    status: str = "todo"  # todo | skipped | failed
    reason: str = ""
    index: int = 0
    base: Path | None = None  # out_dir / rel: where grid sheets and crops go


def _has_magic(text: str) -> bool:
    return any(c in text for c in "*?[")


def _kind(path: Path) -> str:
    ext = path.suffix.lower()
    if ext in media.PHOTO_EXTENSIONS:
        return "photo"
    if ext in VIDEO_EXTENSIONS:
        return "video"
    return "other"


def _is_within(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root)
        return True
    except ValueError:
        return False


def plan_inputs(inputs: Iterable[str | Path], out_dir: str | Path, cfg: Config, edit_labels: Sequence[str] = ("edit",)) -> list[PlanItem]:
    """Expand files, folders (recursive) and globs into :class:`PlanItem` s with their output
    paths under ``out_dir`` (the input tree mirrored; one subfolder per edit when there are
    several). Decides skip / overwrite / errors (missing input, output == input, collisions)."""
    out_dir = Path(out_dir)
    out_root = out_dir.resolve()
    items: list[PlanItem] = []

    def add_tree(root: Path, files: Iterable[Path]) -> None:
        for p in files:
            if not p.is_file() or media.is_temp_name(p.name) or _kind(p) == "other":
                continue
            if any(part.startswith(".") for part in p.relative_to(root).parts):
                continue
            if _is_within(p, out_root) and not _is_within(root, out_root):
                continue  # our own outputs inside an input folder
            items.append(PlanItem(p, p.relative_to(root), _kind(p)))

    for raw in inputs:
        text = str(raw)
        p = Path(text).expanduser()
        if p.is_dir():
            add_tree(p, sorted(p.rglob("*")))
        elif p.exists() or p.is_symlink():
            kind = _kind(p)
            item = PlanItem(p, Path(p.name), kind)
            if kind == "other":
                item.status, item.reason = "failed", f"unsupported file type '{p.suffix or p.name}' (photos: JPEG, PNG, WebP, BMP, TIFF)"
            items.append(item)
        elif _has_magic(text):
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True))
            parts = Path(text).parts
            base = Path(*[q for q in parts[: next(i for i, q in enumerate(parts) if _has_magic(q))]]) if parts else Path(".")
            before = len(items)
            add_tree(base if str(base) else Path("."), matches)
            if len(items) == before:
                items.append(PlanItem(p, Path(p.name), "other", status="failed", reason="no photos match this pattern"))
        else:
            items.append(PlanItem(p, Path(p.name), "other", status="failed", reason="no such file or folder"))

    labels = list(edit_labels)
    seen: dict[Path, Path] = {}
    for i, item in enumerate(items):
        item.index = i
        if item.status == "failed":
            continue
        item.base = out_dir / item.rel
        if len(labels) == 1:
            item.outputs = [out_dir / item.rel]
        else:
            item.outputs = [out_dir / edit_dirname(lab) / item.rel for lab in labels]
        for out in item.outputs:
            if out.resolve() == item.src.resolve():
                item.status, item.reason = "failed", f"output {out} would overwrite the input (choose another --out)"
                break
            other = seen.get(out.resolve())
            if other is not None:
                item.status, item.reason = "failed", f"output {out} is also the output of {other} (inputs with the same relative path)"
                break
            seen[out.resolve()] = item.src
        if item.status == "failed":
            continue
        if all(o.exists() for o in item.outputs) and not cfg.run.overwrite:
            if cfg.run.skip_existing:
                item.status, item.reason = "skipped", "output exists (use --overwrite to replace it)"
            else:
                item.status, item.reason = "failed", f"output {item.outputs[0]} exists (use --overwrite or --skip-existing)"
    return items


def _clean_stale_temps(items: Sequence[PlanItem]) -> None:
    """Remove ``<output>.tmp-<pid>-<n>`` files left by killed runs (their pid is gone)."""
    wanted: dict[Path, set[str]] = {}
    for item in items:
        for o in item.outputs:
            wanted.setdefault(o.parent, set()).add(o.name)
    for folder, names in wanted.items():
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for e in entries:
            base, sep, tail = e.name.rpartition(".tmp-")
            if sep and base in names and media.is_temp_name(e.name):
                pid = int(tail.split("-")[0])
                if pid != os.getpid() and not _pid_alive(pid):
                    try:
                        os.unlink(e.path)
                    except OSError:
                        pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


# ------------------------------------------------------------------------------------------------
# the overlapped photo runner


@dataclass
class _PhotoJob:
    item: PlanItem
    result: FileResult
    decoded: media.Decoded | None = None
    frame: FrameJob | None = None
    error: str | None = None


def _one_torch_thread() -> None:
    """Worker threads run their torch ops single-threaded (with OpenMP the setting is per
    thread), so they do not oversubscribe the cores the generator's intra-op pool uses."""
    torch.set_num_threads(1)


class _Timers:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seconds: dict[str, float] = {}

    def add(self, stage: str, dt: float, result: FileResult | None = None) -> None:
        with self.lock:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + dt
        if result is not None:
            result.timings[stage] = result.timings.get(stage, 0.0) + dt


def _reason_for(exc: BaseException, item: PlanItem) -> str:
    if isinstance(exc, InputError) and exc.path is not None and Path(exc.path) == item.src:
        return exc.reason
    if isinstance(exc, StarcliError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "out of memory"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:300]


class _Runner:
    def __init__(self, pipeline: Pipeline, cfg: Config, report: RunReport, emit: Callable[[Event], None]):
        self.p = pipeline
        self.cfg = cfg
        self.report = report
        self.emit = emit
        self.t = _Timers()
        self.stop = threading.Event()
        self.max_pixels = int(cfg.run.max_megapixels * 1e6)

    # reader pool: decode + detect (one photo)
    def load(self, job: _PhotoJob) -> _PhotoJob:
        item, res = job.item, job.result
        try:
            if self.stop.is_set():
                raise InputError(item.src, "interrupted")
            t0 = time.perf_counter()
            dec = media.decode_image(item.src, max_pixels=self.max_pixels)
            self.t.add("decode", time.perf_counter() - t0, res)
            job.decoded = dec
            res.format, res.size = dec.info.format, dec.info.size
            frame = FrameJob(pixels=dec.pixels, key=item.src, aligned_input=self.cfg.run.aligned)
            if not self.cfg.run.aligned:
                t0 = time.perf_counter()
                frame.faces = self.p.detect([dec.pixels])[0]
                wait = self.p.detect_wait_seconds
                self.t.add("detect", time.perf_counter() - t0 - wait, res)
                self.t.add("detect.wait", wait)
            job.frame = frame
        except Exception as exc:  # per-file errors never stop the run
            job.error = _reason_for(exc, item)
        return job

    # writer pool: paste + encode + write (one photo)
    def finish(self, job: _PhotoJob) -> FileResult:
        item, res = job.item, job.result
        written: list[Path] = []
        try:
            if job.error is not None:
                raise _Failed(job.error)
            frame, dec = job.frame, job.decoded
            assert frame is not None and dec is not None
            if not frame.faces and not frame.aligned_input:
                policy = self.cfg.run.no_face
                hint = "no face found" + ("" if self.cfg.detect.upsample else " (small faces: try --upsample 1)")
                if policy == "fail":
                    raise _Failed(hint)
                if policy == "skip":
                    res.status, res.reason = "skipped", hint
                    return res
                data = item.src.read_bytes()
                for out in item.outputs:
                    _write_output(out, data)
                    written.append(out)
                res.status, res.reason, res.outputs = "no_face", hint + ": copied unchanged", [str(o) for o in item.outputs]
                return res
            if frame.crops is None:
                raise _Failed("internal error: photo was not aligned")
            t0 = time.perf_counter()
            results = self.p.paste(frame)
            self.t.add("paste", time.perf_counter() - t0, res)
            res.faces = self._face_records(frame)
            t0 = time.perf_counter()
            blobs = []
            for pixels in results:
                out_dec = media.Decoded(pixels, dec.alpha, dec.info, dec.native)
                blobs.append(media.encode_image(out_dec, png_compress_level=self.cfg.run.png_compress_level,
                                                jpeg_quality=self.cfg.run.jpeg_quality or None,
                                                changed=[frame.region] if frame.region else None))
            self.t.add("encode", time.perf_counter() - t0, res)
            t0 = time.perf_counter()
            for out, blob in zip(item.outputs, blobs):
                _write_output(out, blob)
                written.append(out)
            if self.cfg.run.grid:
                grid = self._write_grid(item, dec, results)
                written.append(grid)
                res.extras.append(str(grid))
            if self.cfg.run.crops:
                self._write_crops(item, frame, written)
                res.extras.extend(str(p) for p in written[len(item.outputs) + bool(self.cfg.run.grid):])
            self.t.add("write", time.perf_counter() - t0, res)
            res.status, res.outputs = "done", [str(o) for o in item.outputs]
        except Exception as exc:
            res.status = "failed"
            res.reason = exc.reason if isinstance(exc, _Failed) else _reason_for(exc, item)
            # all or nothing per input: remove outputs of this input written by this run
            for out in written:
                try:
                    out.unlink()
                except OSError:
                    pass
        finally:
            job.decoded = None
            job.frame = None
        return res

    def _face_records(self, frame: FrameJob) -> list[dict[str, Any]]:
        records = []
        attrs = self.p.spec.attributes
        src = frame.source.tolist() if frame.source is not None else None
        for i in range(len(frame.crops)):
            rec: dict[str, Any] = {}
            if i < len(frame.faces) and hasattr(frame.faces[i], "to_dict"):
                rec.update(frame.faces[i].to_dict())
            elif i < len(frame.faces):
                f = frame.faces[i]
                rec["box"] = [round(float(v), 2) for v in f.box]
                rec["score"] = round(float(f.score), 4)
                rec["landmarks"] = {k: [round(float(v[0]), 2), round(float(v[1]), 2)] for k, v in f.landmarks.items()}
            rec["transform"] = [[round(float(v), 6) for v in row] for row in frame.frame_transforms[i].tolist()]
            if src is not None:
                rec["source"] = {a: int(v) for a, v in zip(attrs, src[i])}
            records.append(rec)
        return records

    def _side_path(self, item: PlanItem, suffix: str) -> Path:
        base = item.base or item.outputs[0]
        return base.with_name(base.stem + suffix)

    def _write_grid(self, item: PlanItem, dec: media.Decoded, results: list[np.ndarray]) -> Path:
        from PIL import Image

        panels = [dec.pixels] + list(results)
        h, w = dec.pixels.shape[:2]
        f = min(1.0, 512.0 / h)
        size = (max(1, round(w * f)), max(1, round(h * f)))
        gap = 4
        sheet = Image.new("RGB", (size[0] * len(panels) + gap * (len(panels) - 1), size[1]), (255, 255, 255))
        for k, px in enumerate(panels):
            im = Image.fromarray(np.ascontiguousarray(media.to_uint8(px)), "RGB")
            if size != (w, h):
                im = im.resize(size, Image.LANCZOS, reducing_gap=2.0)
            sheet.paste(im, (k * (size[0] + gap), 0))
        fmt = dec.info.format
        arr = np.asarray(sheet)
        info = media.ImageInfo(None, fmt, "RGB", sheet.size)
        path = self._side_path(item, ".grid" + item.src.suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        return media.atomic_write_bytes(path, media.encode_image(media.Decoded(arr, None, info), format=fmt,
                                                                 png_compress_level=self.cfg.run.png_compress_level))

    def _write_crops(self, item: PlanItem, frame: FrameJob, written: list[Path]) -> None:
        """Write the aligned and translated crops; appends each file to ``written``."""
        folder = self._side_path(item, ".crops")
        folder.mkdir(parents=True, exist_ok=True)
        labels = [e.label() for e in self.p.edits]

        def save(t: torch.Tensor, name: str) -> None:
            arr = media.from_tensor(t, np.uint8)
            info = media.ImageInfo(None, "PNG", "RGB", (arr.shape[1], arr.shape[0]))
            written.append(media.atomic_write_bytes(folder / name, media.encode_image(media.Decoded(arr, None, info), format="PNG")))

        for i in range(len(frame.crops)):
            save(frame.crops[i], f"face{i}.aligned.png")
            for lab, out in zip(labels, frame.outputs):
                save(out[i], f"face{i}.{edit_dirname(lab)}.png")

    # the whole run
    def run(self, items: Sequence[PlanItem]) -> None:
        cfg = self.cfg
        workers = max(1, cfg.run.workers)
        qsize = max(1, cfg.run.queue_size)
        batch_faces = max(1, cfg.run.batch_size)
        photos = [it for it in items if it.status == "todo" and it.kind == "photo"]
        results: dict[int, FileResult] = {}
        ready: queue.Queue = queue.Queue()
        batches: queue.Queue = queue.Queue(maxsize=2)
        in_slots = threading.Semaphore(qsize)
        out_slots = threading.Semaphore(qsize)
        lock = threading.Lock()
        errors: list[BaseException] = []
        gen_waiting = threading.Event()  # set while the generator waits for a batch

        def record(res: FileResult) -> None:
            with lock:
                results[res.index] = res
            self.emit(Event("file", result=res))

        readers = ThreadPoolExecutor(workers, thread_name_prefix="starcli-read", initializer=_one_torch_thread)
        writers = ThreadPoolExecutor(workers, thread_name_prefix="starcli-write", initializer=_one_torch_thread)

        def write_done(job: _PhotoJob) -> None:
            try:
                record(self.finish(job))
            finally:
                out_slots.release()

        def feeder() -> None:
            try:
                for it in photos:
                    while not in_slots.acquire(timeout=0.1):
                        if self.stop.is_set():
                            return
                    if self.stop.is_set():
                        in_slots.release()
                        return
                    job = _PhotoJob(it, FileResult(str(it.src), kind="photo", index=it.index))
                    readers.submit(lambda j=job: ready.put(self.load(j)))
            finally:
                readers.shutdown(wait=True)
                ready.put(_DONE)

        def aligner() -> None:  # keeps torch's default threads: the critic runs here
            try:
                done = False
                while not done:
                    group: list[_PhotoJob] = []
                    faces = 0
                    item = ready.get()
                    while True:
                        if item is _DONE:
                            done = True
                            break
                        if item.error is None and item.frame is not None and (item.frame.faces or item.frame.aligned_input):
                            group.append(item)
                            faces += max(1, len(item.frame.faces))
                        else:  # failed or no face: straight to the writers
                            in_slots.release()
                            out_slots.acquire()
                            writers.submit(write_done, item)
                        if faces >= batch_faces:
                            break
                        # wait for more photos while the generator is busy; flush a partial
                        # batch as soon as it would otherwise sit idle
                        item = None
                        while item is None:
                            try:
                                item = ready.get(timeout=0.005 if group else None)
                            except queue.Empty:
                                if gen_waiting.is_set() and batches.empty():
                                    break
                        if item is None:
                            break
                    if group:
                        t0 = time.perf_counter()
                        try:
                            self.p.align([j.frame for j in group])
                        except Exception as exc:
                            for j in group:
                                j.error = "align: " + _reason_for(exc, j.item)
                        dt = time.perf_counter() - t0
                        for j in group:
                            self.t.add("align", dt / len(group), j.result)
                        t0 = time.perf_counter()
                        try:  # the critic runs here, beside the generator busy with the previous batch
                            self.p.estimate_sources([j.frame for j in group if j.error is None])
                        except Exception as exc:
                            for j in group:
                                j.error = j.error or "source attributes: " + _reason_for(exc, j.item)
                        self.t.add("critic", time.perf_counter() - t0)
                        batches.put(group)
            except BaseException as exc:  # a bug: stop the run, re-raised by the main thread
                errors.append(exc)
                self.stop.set()
            finally:
                batches.put(_DONE)

        threads = [threading.Thread(target=feeder, name="starcli-feed", daemon=True),
                   threading.Thread(target=aligner, name="starcli-align", daemon=True)]
        for th in threads:
            th.start()
        first = True
        try:
            while True:
                t0 = time.perf_counter()
                gen_waiting.set()
                group = batches.get()
                gen_waiting.clear()
                waited = time.perf_counter() - t0
                if first:
                    self.report.generator_first_wait_seconds = waited
                    first = False
                elif group is not _DONE:
                    self.report.generator_idle_seconds += waited
                if group is _DONE:
                    break
                ok = [j for j in group if j.error is None]
                t0 = time.perf_counter()
                critic0 = self.p.critic_seconds
                try:
                    n = self.p.translate([j.frame for j in ok])
                except Exception as exc:
                    n = 0
                    for j in ok:
                        j.error = "translate: " + _reason_for(exc, j.item)
                dt = time.perf_counter() - t0
                self.t.add("translate", dt)
                self.t.add("translate.critic", self.p.critic_seconds - critic0)
                total = sum(max(1, len(j.frame.crops)) for j in ok if j.frame is not None and j.frame.crops is not None) or 1
                for j in ok:
                    if j.frame is not None and j.frame.crops is not None:
                        j.result.timings["translate"] = dt * len(j.frame.crops) / total
                self.report.batches += 1
                self.emit(Event("batch", faces=n))
                for j in group:
                    in_slots.release()
                    out_slots.acquire()
                    writers.submit(write_done, j)
        except BaseException:
            self.stop.set()
            raise
        finally:
            # on interrupt: drain the batch queue so the aligner can finish; nothing half-written
            # is possible (every output is renamed into place only when complete)
            while threads[1].is_alive():
                try:
                    group = batches.get(timeout=0.05)
                except queue.Empty:
                    continue
                if group is not _DONE:
                    for _ in group:
                        in_slots.release()
            for th in threads:
                th.join()
            writers.shutdown(wait=True)
        if errors:
            raise errors[0]
        for res in results.values():
            self.report.files[res.index] = res

    def run_videos(self, items: Sequence[PlanItem]) -> None:
        videos = [it for it in items if it.status == "todo" and it.kind == "video"]
        if not videos:
            return
        handler = None
        try:
            handler = getattr(importlib.import_module("starcli.video"), "process_video", None)
        except Exception:
            handler = None
        for it in videos:
            res = FileResult(str(it.src), kind="video", index=it.index)
            if handler is None:
                res.status, res.reason = "skipped", "video not supported yet"
            else:
                t0 = time.perf_counter()
                try:
                    for out in it.outputs:
                        out.parent.mkdir(parents=True, exist_ok=True)
                    vr = handler(it.src, it.outputs[0] if len(it.outputs) == 1 else it.outputs, self.p, self.cfg,
                                 on_event=lambda ev: self.emit(Event("video", video=ev)))
                    res.status, res.outputs = "done", [str(o) for o in it.outputs]
                    for key in ("frames", "faces", "tracks", "copied", "note", "rate"):
                        if hasattr(vr, key):
                            res.video[key] = getattr(vr, key)
                    if getattr(vr, "copied", False):
                        res.status, res.reason = "no_face", getattr(vr, "note", "") or "no face found: copied unchanged"
                except Exception as exc:
                    res.status, res.reason = "failed", _reason_for(exc, it)
                self.t.add("video", time.perf_counter() - t0, res)
            self.report.files[it.index] = res
            self.emit(Event("file", result=res))


def _write_output(out: Path, data: bytes) -> None:
    """Create ``out``'s folder and write ``data`` atomically; failures raise :class:`_Failed`
    with ``cannot write <out>: <why>``."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in (out.parent, *out.parent.parents) if p.exists() and not p.is_dir()), out.parent)
        raise _Failed(f"cannot write {out}: {blocker} is a file, not a folder") from None
    except OSError as exc:
        raise _Failed(f"cannot write {out}: cannot create its folder ({(exc.strerror or str(exc)).lower()})") from None
    try:
        media.atomic_write_bytes(out, data)
    except InputError as exc:
        raise _Failed(f"cannot write {out}: {exc.reason.removeprefix('cannot write').lstrip(': ') or 'error'}") from None


class _Failed(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def process_paths(inputs: Iterable[str | Path], out_dir: str | Path, cfg: Config | None = None, *,
                  on_event: Callable[[Event], None] | None = None, pipeline: Pipeline | None = None) -> RunReport:
    """Translate every face in ``inputs`` (files, folders, globs) into ``out_dir``.

    Outputs mirror the input tree with the same names and formats (one subfolder per edit when
    several edits are requested); existing outputs are skipped (``run.skip_existing``) unless
    ``run.overwrite``; an input is never overwritten; every file is written atomically.
    Per-file problems are recorded in the returned :class:`RunReport` and the run goes on;
    problems that concern every file (model, backend, attributes) raise
    :class:`~starcli.errors.StarcliError` before any work. ``on_event`` receives
    :class:`Event` s (from worker threads; keep it quick and thread-safe).
    """
    cfg = cfg or load_config(None, search_cwd=False)
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    emit_lock = threading.Lock()

    def emit(ev: Event) -> None:
        if on_event is not None:
            with emit_lock:
                on_event(ev)

    start = time.perf_counter()
    if pipeline is None and not cfg.run.dry_run:
        pipeline = Pipeline(cfg)
    if pipeline is not None:
        labels = [e.label() for e in pipeline.edits]
    else:
        labels = _labels_without_model(cfg)
    items = plan_inputs(inputs, out_dir, cfg, labels)
    report = RunReport(edits=labels, dry_run=cfg.run.dry_run)
    if pipeline is not None:
        report.model = pipeline.spec.name
        report.backend = f"{getattr(pipeline.backend, 'name', type(pipeline.backend).__name__)}"
        precision = getattr(pipeline.backend, "precision", None)
        if precision:
            report.backend += f" ({precision})"
        report.detector = "none (--aligned)" if cfg.run.aligned else pipeline.detector_name
    report.files = [FileResult(str(it.src), [str(o) for o in it.outputs], status="planned" if it.status == "todo" else it.status,
                               reason=it.reason, kind=it.kind, index=it.index) for it in items]
    emit(Event("plan", total=len(items)))
    for it, res in zip(items, report.files):
        if it.status != "todo":
            emit(Event("file", result=res))
    if cfg.run.dry_run:
        report.wall_seconds = time.perf_counter() - start
        return report
    assert pipeline is not None
    _clean_stale_temps(items)
    runner = _Runner(pipeline, cfg, report, emit)
    start = time.perf_counter()
    runner.run(items)
    runner.run_videos(items)
    report.wall_seconds = time.perf_counter() - start
    report.stage_seconds = dict(runner.t.seconds)
    if cfg.run.report:
        report.write_json(cfg.run.report)
    return report


def _labels_without_model(cfg: Config) -> list[str]:
    labels = []
    if cfg.translate.set:
        labels.append(",".join(cfg.translate.set))
    labels.extend(cfg.translate.edits)
    return labels or ["edit"]

