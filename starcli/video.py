"""Video: probe, streamed decode / encode with imageio-ffmpeg's ffmpeg binary, audio copy, and the
video loop (decode thread -> detect + track + align + translate + paste -> encode thread).

Conventions (docs/architecture.md): frames are RGB ``uint8`` numpy arrays ``(H, W, 3)`` at the
video's native (display) size; odd sizes are kept.  Frames are read and written at one constant
rate (:attr:`VideoInfo.rate`, a :class:`~fractions.Fraction`), so variable-frame-rate input gives
a constant-rate output of the same duration and the copied audio stays in sync.

Memory: frames travel in batches of ``batch_frames`` through two queues of depth
``queue_depth``; at most ``(2 * queue_depth + 3) * batch_frames`` frames are alive at once
(queued, being decoded, processed and encoded), i.e. ``frame_bytes * that`` plus the processing
stage's float32 copies of one batch (4x the uint8 size).  See docs/video.md for measured numbers.

Output files are atomic and resumable: video segments of ``segment_seconds`` are encoded into a
work folder next to the output (``.<name>.starcli-work``), each renamed into place when complete;
at the end they are concatenated (stream copy) with the original audio (stream copy) into a
``<name>.tmp-<pid>`` file that is checked and then renamed to the output.  A killed run restarted
with the same input and settings continues after its last finished segment.

>>> VIDEO_EXTENSIONS >= {".mp4", ".gif"}
True
>>> snap_rate(29.97), snap_rate(25.0), snap_rate(12.5)
(Fraction(30000, 1001), Fraction(25, 1), Fraction(25, 2))
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import queue
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from starcli.errors import ConfigError, InputError, StarcliError

__all__ = [
    "VIDEO_EXTENSIONS",
    "VideoInfo",
    "VideoOptions",
    "VideoReport",
    "ffmpeg_exe",
    "is_video",
    "probe",
    "snap_rate",
    "read_frames",
    "SegmentWriter",
    "encoder_args",
    "process_video",
]

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".mkv", ".avi", ".webm", ".gif", ".m4v"})

# container (by extension) -> (ffmpeg muxer, default codec)
CONTAINERS: dict[str, tuple[str, str]] = {
    ".mp4": ("mp4", "libx264"),
    ".m4v": ("mp4", "libx264"),
    ".mov": ("mov", "libx264"),
    ".mkv": ("matroska", "libx264"),
    ".avi": ("avi", "mpeg4"),
    ".webm": ("webm", "libvpx-vp9"),
    ".gif": ("gif", "gif"),
}
# codecs a container accepts (None: anything ffmpeg can mux)
_ALLOWED = {
    "webm": {"libvpx-vp9", "libvpx", "libaom-av1", "libsvtav1", "librav1e"},
    "gif": {"gif"},
}
_ODD_OK_420 = {"libvpx-vp9", "libvpx", "mpeg4", "gif", "libaom-av1"}


def ffmpeg_exe() -> str:
    """Path of imageio-ffmpeg's bundled ffmpeg binary (``IMAGEIO_FFMPEG_EXE`` overrides)."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def is_video(path: str | Path) -> bool:
    """True when ``path``'s extension is one of :data:`VIDEO_EXTENSIONS` (case-insensitive)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


# ---------------------------------------------------------------------------------------------
# probing

_COMMON_RATES = [Fraction(n * 1000, 1001) for n in (24, 30, 48, 60, 120)]


def snap_rate(fps: float) -> Fraction:
    """A rational frame rate for ``fps`` as ffmpeg prints it (2 decimals): NTSC rates are snapped
    to ``n*1000/1001``, others to the simplest fraction within 0.005."""
    for r in _COMMON_RATES:
        if abs(float(r) - fps) < 0.006:
            return r
    return Fraction(fps).limit_denominator(100) if abs(float(Fraction(fps).limit_denominator(100)) - fps) < 0.005 \
        else Fraction(fps).limit_denominator(1001)


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` found.  Sizes are the display size (rotation applied, as decoded).

    ``fps``: the stream's average frame rate; ``tbr``: ffmpeg's guess of the real base rate
    (r_frame_rate); ``frames``: packets counted in the first video stream (exact for ordinary
    files, without decoding); ``vfr``: variable frame rate suspected (fps != tbr, or frames
    disagree with duration x fps); ``rate``: the constant rate frames are read and written at
    (``tbr`` for constant-rate input, the average rate ``frames / duration`` for VFR input so the
    duration and the audio sync are kept).
    """

    path: Path
    format: str
    codec: str
    width: int
    height: int
    pix_fmt: str
    fps: float
    tbr: float
    duration: float
    frames: int
    vfr: bool
    rate: Fraction
    has_audio: bool
    audio_codecs: tuple[str, ...] = ()
    rotation: int = 0
    colorspace: str = ""

    @property
    def frame_bytes(self) -> int:
        return self.width * self.height * 3


def _run(args: list[str], timeout: float | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)


def _ffmpeg_error(stderr: str) -> str:
    """The most telling line of an ffmpeg error output (without the ``[tag @ 0x..]`` prefix)."""
    lines = [re.sub(r"^\[[^\]]*\]\s*", "", ln).strip() for ln in stderr.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith(("Error opening input file", "Error opening input files",
                                                             "Conversion failed", "At least one output"))]
    prefer = [ln for ln in lines if re.search(r"error|invalid|not found|unsupported|could not|failed", ln, re.I)]
    return (prefer or lines or ["ffmpeg failed"])[0][:200]


_STREAM_RE = re.compile(r"Stream #0:(\d+)[^:]*: (Video|Audio|Subtitle|Data|Attachment): (.*)")


def probe(path: str | Path, *, count_frames: bool = True) -> VideoInfo:
    """Probe ``path`` with the bundled ffmpeg: container, first video stream, audio streams.

    Raises :class:`InputError` naming the file when it cannot be opened, is not a video, has no
    video stream or uses a codec the bundled ffmpeg cannot decode.  ``count_frames`` counts the
    video packets (a demux pass without decoding: ~1 s per 30 min of HD video).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file")
    res = _run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)], timeout=120)
    err = res.stderr.decode("utf-8", "replace")
    m = re.search(r"Input #0, ([^,\n]+(?:,[^,\n ]+)*), from", err)
    if not m:
        reason = _ffmpeg_error(err)
        if "Invalid data found" in reason or "moov atom not found" in err:
            why = "moov atom not found" if "moov atom not found" in err else reason
            raise InputError(path, f"not a readable video (corrupt, truncated or not a video file: {why})")
        raise InputError(path, f"cannot open video: {reason}")
    fmt = m.group(1)
    streams = [(k, rest) for _, k, rest in _STREAM_RE.findall(err)]
    videos = [rest for k, rest in streams if k == "Video" and "attached pic" not in rest]
    audios = [rest for k, rest in streams if k == "Audio"]
    if not videos:
        return_kind = "an audio-only file" if audios else "no streams"
        raise InputError(path, f"has no video stream ({return_kind})")
    vs = videos[0]
    codec = vs.split(",")[0].split(" ")[0].strip()
    if codec == "none" or "unknown" in vs.split(",")[0]:
        tag = re.search(r"\(([^)/]+) / 0x", vs)
        raise InputError(path, f"unsupported video codec {tag.group(1).strip() if tag else codec!r}: "
                               "the bundled ffmpeg cannot decode it")
    size = re.search(r"(?<![\w])(\d{1,5})x(\d{1,5})(?![\w])", vs)
    if not size:
        raise InputError(path, "video stream has no frame size (corrupt or unsupported)")
    width, height = int(size.group(1)), int(size.group(2))
    pix = re.search(r"^[^,]+,\s*([a-z0-9_]+)(\(([^)]*)\))?", vs)
    pix_fmt = pix.group(1) if pix else ""
    colorspace = ""
    if pix and pix.group(3):
        colorspace = ",".join(p.strip() for p in pix.group(3).split(",") if p.strip() not in ("progressive", "top first", "bottom first", "top coded first (swapped)"))
    fps_m = re.search(r"([\d.]+)(k?) fps", vs)
    tbr_m = re.search(r"([\d.]+)(k?) tbr", vs)
    fps = float(fps_m.group(1)) * (1000 if fps_m.group(2) else 1) if fps_m else 0.0
    tbr = float(tbr_m.group(1)) * (1000 if tbr_m.group(2) else 1) if tbr_m else fps
    dur_m = re.search(r"Duration: (\d+):(\d+):([\d.]+)", err)
    duration = int(dur_m.group(1)) * 3600 + int(dur_m.group(2)) * 60 + float(dur_m.group(3)) if dur_m else 0.0
    rot_m = re.search(r"rotation of (-?[\d.]+) degrees", err)
    rotation = int(round(float(rot_m.group(1)))) % 360 if rot_m else 0
    if rotation in (90, 270):
        width, height = height, width
    frames = 0
    if count_frames:
        frames, secs = _count_packets(path)
        if duration <= 0:
            duration = secs
    if fps <= 0:
        fps = frames / duration if duration > 0 and frames > 0 else tbr
    if tbr <= 0:
        tbr = fps
    vfr = abs(fps - tbr) > 0.01 * max(tbr, 1e-6)
    if count_frames and duration > 0 and fps > 0 and frames > 0:
        vfr = vfr or abs(frames - duration * fps) > max(2.0, 0.02 * frames)
    if vfr and frames > 0 and duration > 0:
        rate = snap_rate(frames / duration)
    else:
        rate = snap_rate(tbr if tbr > 0 else fps) if (tbr or fps) else Fraction(25)
    if rate <= 0 or rate > 1000:
        raise InputError(path, f"implausible frame rate {float(rate):g} fps")
    audio_codecs = tuple(a.split(",")[0].split(" ")[0] for a in audios)
    return VideoInfo(path, fmt, codec, width, height, pix_fmt, fps, tbr, duration, frames, vfr, rate,
                     bool(audios), audio_codecs, rotation, colorspace)


def _count_packets(path: Path) -> tuple[int, float]:
    """(video packets, seconds) of the first video stream by a stream-copy pass to null."""
    res = _run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path), "-map", "0:v:0", "-c", "copy",
                "-f", "null", "-"], timeout=600)
    err = res.stderr.decode("utf-8", "replace")
    fr = re.findall(r"frame=\s*(\d+)", err)
    tm = re.findall(r"time=\s*(\d+):(\d+):([\d.]+)", err)
    secs = int(tm[-1][0]) * 3600 + int(tm[-1][1]) * 60 + float(tm[-1][2]) if tm else 0.0
    return (int(fr[-1]) if fr else 0), secs


# ---------------------------------------------------------------------------------------------
# decoding

_DECODE_ERR = re.compile(r"error while decoding|invalid nal|corrupt|concealing|partial file|truncat|"
                         r"invalid data|missing picture|decode_slice|error reading|ac-tex damaged|"
                         r"packet too small|max_analyze", re.I)


class _StderrDrain(threading.Thread):
    """Collects a subprocess's stderr (so a full pipe never blocks ffmpeg)."""

    def __init__(self, stream):
        super().__init__(daemon=True)
        self.stream = stream
        self.lines: list[str] = []

    def run(self) -> None:
        for raw in iter(self.stream.readline, b""):
            if len(self.lines) < 2000:
                self.lines.append(raw.decode("utf-8", "replace").rstrip())

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def _time_args(start: float, end: float | None) -> list[str]:
    args = []
    if start > 0:
        args += ["-ss", f"{start:.6f}"]
    if end is not None:
        args += ["-t", f"{max(end - start, 0.0):.6f}"]
    return args


def read_frames(info: VideoInfo, *, start: float = 0.0, end: float | None = None, skip_frames: int = 0,
                batch_frames: int = 8, strict: bool = True) -> Iterator[list[np.ndarray]]:
    """Decode ``info.path`` as batches of RGB uint8 ``(H, W, 3)`` frames at ``info.rate``.

    ``start``/``end`` (seconds) select a time range (accurate seek); ``skip_frames`` drops that
    many frames of the range first (used to resume; exact, after the rate conversion).  Only
    ``batch_frames`` frames are held here at a time.  Raises :class:`InputError` when ffmpeg
    fails, reports corrupt data (``strict``), or the stream ends far before its announced length
    (truncated file).  Closing the generator stops ffmpeg.
    """
    w, h = info.width, info.height
    vf = f"fps={info.rate.numerator}/{info.rate.denominator}"
    if skip_frames > 0:
        vf += f",trim=start_frame={int(skip_frames)}"
    args = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", *_time_args(start, end), "-i", str(info.path),
            "-map", "0:v:0", "-an", "-sn", "-dn", "-vf", vf, "-fps_mode", "passthrough"]
    limit = expected_frames(info, start, end) - skip_frames if info.frames > 0 else 0
    if limit > 0:
        # the fps filter may repeat the last frame up to the container's end (audio longer than
        # video, e.g. AVI): cap at the stream's own length
        args += ["-frames:v", str(limit)]
    args += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            bufsize=0)
    drain = _StderrDrain(proc.stderr)
    drain.start()
    nbytes = w * h * 3
    count = 0
    finished = False
    try:
        batch: list[np.ndarray] = []
        while True:
            buf = _read_exact(proc.stdout, nbytes)
            if buf is None:
                break
            if len(buf) < nbytes:
                break  # trailing partial frame (ffmpeg killed or broken stream): checked below
            batch.append(np.frombuffer(buf, np.uint8).reshape(h, w, 3))
            count += 1
            if len(batch) >= batch_frames:
                yield batch
                batch = []
        code = proc.wait()
        drain.join(timeout=5)
        text = drain.text
        if code != 0:
            raise InputError(info.path, f"cannot decode video: {_ffmpeg_error(text)}")
        bad = [ln for ln in drain.lines if _DECODE_ERR.search(ln)]
        if strict and bad:
            raise InputError(info.path, f"corrupt video data ({_ffmpeg_error(chr(10).join(bad))}; "
                                        "set video.strict = false to accept concealed frames)")
        expected = expected_frames(info, start, end) - skip_frames
        if count == 0 and skip_frames == 0:
            raise InputError(info.path, "has no video frames" if info.frames == 0 or start == 0
                             else f"has no video frames after {start:g} s")
        if info.frames > 0 and count < expected - max(2, 0.05 * expected):
            raise InputError(info.path, f"truncated or corrupt: decoded {count + skip_frames} of about "
                                        f"{expected + skip_frames} frames")
        if batch:
            yield batch
        finished = True
    finally:
        if not finished and proc.poll() is None:
            proc.kill()
        proc.wait()
        for s in (proc.stdout, proc.stderr):
            try:
                s.close()
            except OSError:
                pass


def _read_exact(stream, n: int) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        b = stream.read(n - got)
        if not b:
            break
        chunks.append(b)
        got += len(b)
    if got == 0:
        return None
    return b"".join(chunks)


def expected_frames(info: VideoInfo, start: float = 0.0, end: float | None = None) -> int:
    """Frames :func:`read_frames` should give for ``[start, end)`` at ``info.rate`` (estimate for
    VFR input; exact for constant-rate input read whole: ``info.frames``)."""
    stop = info.duration if end is None else min(end, info.duration)
    if start <= 0 and end is None and not info.vfr and info.frames > 0:
        return info.frames
    return max(0, int(round((stop - max(start, 0.0)) * float(info.rate))))


# ---------------------------------------------------------------------------------------------
# encoding


@dataclass
class VideoOptions:
    """The ``[video]`` config section (CLI flags mirror the keys).

    - ``codec``: encoder (default per container: libx264 for mp4/mov/mkv, libvpx-vp9 for webm,
      mpeg4 for avi, gif for gif). ``crf``: quality (x264/x265 default 18, vp9 32, av1 30;
      for mpeg4 it is the ``-q:v`` scale 1-31, default 3; ignored for gif). ``preset``: x264/x265
      preset (default ``fast``), for vp9 the ``-deadline`` (good/realtime/best).
    - ``start`` / ``end``: time range in seconds (``end`` exclusive; None: to the end).
    - ``batch_frames``: frames per batch through the generator stage; ``queue_depth``: batches
      buffered between decode, processing and encode; ``segment_seconds``: resume granularity.
    - ``detect_every``: run the detector on every n-th frame (the tracker fills the others).
    - ``resume``: continue a killed run from its last finished segment (else start over).
    - ``strict``: fail on corrupt data the decoder conceals (else accept it).
    - ``fps``: force the output rate (default: see :attr:`VideoInfo.rate`).
    """

    codec: str | None = None
    crf: float | None = None
    preset: str | None = None
    start: float = 0.0
    end: float | None = None
    batch_frames: int = 8
    queue_depth: int = 2
    segment_seconds: float = 10.0
    detect_every: int = 1
    resume: bool = True
    strict: bool = True
    fps: float | None = None

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | VideoOptions | None) -> VideoOptions:
        if section is None:
            return cls()
        if isinstance(section, VideoOptions):
            return section
        names = {f.name for f in dataclasses.fields(cls)}
        out = {}
        for key, value in dict(section).items():
            if key not in names:
                raise ConfigError(f"video.{key}: unknown option (known: {', '.join(sorted(names))})")
            out[key] = value
        opts = cls(**out)
        opts.validate()
        return opts

    def validate(self) -> None:
        if self.start < 0:
            raise ConfigError(f"video.start: must be >= 0, got {self.start!r}")
        if self.end is not None and self.end <= self.start:
            raise ConfigError(f"video.end: must be after video.start ({self.start:g}), got {self.end!r}")
        for key in ("batch_frames", "queue_depth", "detect_every"):
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"video.{key}: must be >= 1, got {getattr(self, key)!r}")
        if self.segment_seconds <= 0:
            raise ConfigError(f"video.segment_seconds: must be > 0, got {self.segment_seconds!r}")


def encoder_args(ext: str, width: int, height: int, opts: VideoOptions) -> tuple[list[str], bool]:
    """ffmpeg output arguments for the video stream of a ``ext`` container, and whether frames
    must be padded to even sizes first (never: odd sizes are encoded natively, see below).

    Odd sizes: H.264/H.265 with 4:2:0 chroma need even sizes (their crop fields work in 2-pixel
    units for 4:2:0), so an odd-sized frame is encoded in 4:4:4 (``yuv444p``, High 4:4:4 profile):
    exact size, no rescale, full chroma; even sizes use ``yuv420p`` for player compatibility.
    VP9, MPEG-4 part 2 and GIF take odd sizes in 4:2:0 / palette form directly.
    """
    muxer, default_codec = CONTAINERS[ext]
    codec = opts.codec or default_codec
    allowed = _ALLOWED.get(muxer)
    if allowed is not None and codec not in allowed:
        raise ConfigError(f"video.codec: {codec!r} cannot go in a {ext} file (use one of {', '.join(sorted(allowed))})")
    odd = width % 2 == 1 or height % 2 == 1
    args = ["-c:v", codec]
    if codec in ("libx264", "libx265"):
        args += ["-preset", opts.preset or "fast", "-crf", f"{18 if opts.crf is None else opts.crf:g}",
                 "-pix_fmt", "yuv444p" if odd else "yuv420p"]
        if codec == "libx265":
            args += ["-tag:v", "hvc1", "-x265-params", "log-level=error"] if muxer in ("mp4", "mov") else \
                ["-x265-params", "log-level=error"]
    elif codec == "libvpx-vp9":
        args += ["-crf", f"{32 if opts.crf is None else opts.crf:g}", "-b:v", "0", "-pix_fmt", "yuv420p",
                 "-deadline", opts.preset or "good", "-cpu-used", "4", "-row-mt", "1"]
    elif codec == "libvpx":
        args += ["-crf", f"{10 if opts.crf is None else opts.crf:g}", "-b:v", "2M", "-pix_fmt", "yuv420p",
                 "-deadline", opts.preset or "good", "-cpu-used", "4"]
    elif codec in ("libaom-av1", "libsvtav1"):
        args += ["-crf", f"{30 if opts.crf is None else opts.crf:g}", "-pix_fmt", "yuv420p"]
    elif codec == "mpeg4":
        args += ["-q:v", f"{3 if opts.crf is None else max(1, min(31, int(opts.crf)))}", "-pix_fmt", "yuv420p"]
        if muxer == "avi":
            args += ["-vtag", "xvid"]
    elif codec == "gif":
        # one palette per frame: streams (a global palette would buffer the whole clip)
        args += ["-vf", "split[a][b];[a]palettegen=stats_mode=single:reserve_transparent=0[p];"
                        "[b][p]paletteuse=new=1:dither=sierra2_4a"]
    else:
        if opts.crf is not None:
            args += ["-crf", f"{opts.crf:g}"]
        if opts.preset:
            args += ["-preset", opts.preset]
        if odd and codec not in _ODD_OK_420:
            args += ["-pix_fmt", "yuv444p"]
    return args, False


class SegmentWriter:
    """Encode a stream of RGB uint8 ``(H, W, 3)`` frames into numbered segment files.

    Every ``segment_frames`` frames a segment ``seg_<k>.<ext>`` is closed; it is written to a
    temporary name and renamed when ffmpeg finished it, so a finished segment is always complete.
    ``first_segment`` continues a numbering (resume).  Call :meth:`close` (or use ``with``) to
    flush the last segment; :meth:`abort` kills ffmpeg and deletes the unfinished segment.
    """

    def __init__(self, workdir: Path, ext: str, width: int, height: int, rate: Fraction, opts: VideoOptions,
                 segment_frames: int, first_segment: int = 0, on_segment: Callable[[int, int], None] | None = None):
        self.workdir = Path(workdir)
        self.ext = ext
        self.muxer = CONTAINERS[ext][0]
        self.width, self.height, self.rate = width, height, rate
        self.args, _ = encoder_args(ext, width, height, opts)
        self.segment_frames = max(1, int(segment_frames))
        self.index = first_segment
        self.on_segment = on_segment
        self._proc: subprocess.Popen | None = None
        self._drain: _StderrDrain | None = None
        self._in_segment = 0
        self.frames_written = 0

    def segment_path(self, k: int) -> Path:
        return self.workdir / f"seg_{k:05d}{self.ext}"

    def _open(self) -> None:
        tmp = self.workdir / f"seg_{self.index:05d}.partial{self.ext}"
        r = self.rate
        args = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y",
                "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{self.width}x{self.height}",
                "-framerate", f"{r.numerator}/{r.denominator}", "-i", "-",
                "-map", "0:v", *self.args, "-an", "-fps_mode", "passthrough", "-f", self.muxer, str(tmp)]
        self._proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, bufsize=0)
        self._drain = _StderrDrain(self._proc.stderr)
        self._drain.start()
        self._tmp = tmp
        self._in_segment = 0

    def write(self, frame: np.ndarray) -> None:
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise InputError(None, f"frame must be ({self.height}, {self.width}, 3) uint8, got {frame.shape} {frame.dtype}")
        if self._proc is None:
            self._open()
        try:
            self._proc.stdin.write(np.ascontiguousarray(frame).data)
        except (BrokenPipeError, OSError):
            self._proc.wait()
            self._drain.join(timeout=5)
            raise StarcliError(f"{self._tmp.name}: encoder failed: {_ffmpeg_error(self._drain.text)}") from None
        self._in_segment += 1
        self.frames_written += 1
        if self._in_segment >= self.segment_frames:
            self._finish()

    def _finish(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            proc.stdin.close()
        except OSError:
            pass
        code = proc.wait()
        self._drain.join(timeout=10)
        if code != 0:
            self._tmp.unlink(missing_ok=True)
            raise StarcliError(f"encoder failed ({' '.join(self.args[:2])}): {_ffmpeg_error(self._drain.text)}")
        os.replace(self._tmp, self.segment_path(self.index))
        if self.on_segment is not None:
            self.on_segment(self.index, self._in_segment)
        self.index += 1

    def close(self) -> None:
        self._finish()

    def abort(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait()
            getattr(self, "_tmp", Path("/nonexistent")).unlink(missing_ok=True)

    def __enter__(self) -> SegmentWriter:
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self.close()
        else:
            self.abort()


def concat_segments(segments: Sequence[Path], out_tmp: Path, ext: str, info: VideoInfo | None,
                    start: float = 0.0, end: float | None = None) -> None:
    """Join ``segments`` (stream copy) with the audio streams of ``info.path`` (stream copy, same
    time range) into ``out_tmp``.  The audio is only mapped when the probe found some: mapping the
    audio of an input that has none breaks ffmpeg."""
    muxer = CONTAINERS[ext][0]
    listing = out_tmp.with_name(out_tmp.name + ".concat.txt")
    listing.write_text("ffconcat version 1.0\n" + "".join(
        "file '" + str(p.resolve()).replace("'", "'\\''") + "'\n" for p in segments))
    args = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y", "-f", "concat", "-safe", "0",
            "-i", str(listing)]
    maps = ["-map", "0:v"]
    if info is not None and info.has_audio and muxer != "gif":
        args += [*_time_args(start, end), "-i", str(info.path)]
        maps += ["-map", "1:a", "-map_metadata", "1"]
    args += maps + ["-c", "copy"]
    if muxer in ("mp4", "mov"):
        args += ["-movflags", "+faststart"]
    args += ["-f", muxer, str(out_tmp)]
    try:
        res = _run(args, timeout=3600)
    finally:
        listing.unlink(missing_ok=True)
    if res.returncode != 0:
        out_tmp.unlink(missing_ok=True)
        raise StarcliError(f"{out_tmp.name}: joining segments failed: {_ffmpeg_error(res.stderr.decode('utf-8', 'replace'))}")


# ---------------------------------------------------------------------------------------------
# test / benchmark clips


def render_pan_clip(image: np.ndarray, out: str | Path, size: tuple[int, int], seconds: float = 1.0,
                    fps: float = 25, *, audio: bool = False, zoom: tuple[float, float] = (1.0, 1.25),
                    pan: float = 0.08, still: bool = False, extra: Sequence[str] = (),
                    codec_args: Sequence[str] | None = None, noise: float = 0.0, seed: int = 0) -> Path:
    """Write a pan/zoom clip over ``image`` (RGB uint8 ``(H, W, 3)``) at ``size = (W, H)``.

    The view is the image's centre region of aspect ``W/H``, zoomed from ``zoom[0]`` to ``zoom[1]``
    and panned by ``pan`` of the width (``still``: a fixed view); ``noise`` adds gaussian sensor
    noise (std in 0-255 units).  ``audio`` adds a 440 Hz sine track (AAC; Opus for .webm).
    Used by the tests and the benchmark.
    """
    import torch
    import torch.nn.functional as F

    out = Path(out)
    w, h = size
    n = max(1, int(round(seconds * fps)))
    src = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()[None] / 255.0
    ih, iw = image.shape[:2]
    rng = np.random.default_rng(seed)
    ext = out.suffix.lower()
    muxer = CONTAINERS.get(ext, ("mp4", "libx264"))[0]
    if codec_args is None:
        codec_args, _ = encoder_args(ext if ext in CONTAINERS else ".mp4", w, h, VideoOptions(crf=12))
    args = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
            "-s", f"{w}x{h}", "-framerate", str(snap_rate(fps)), "-i", "-"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={n / fps:.4f}"]
    args += ["-map", "0:v", *codec_args, "-fps_mode", "passthrough"]
    if audio:
        args += ["-map", "1:a", "-c:a", "libopus" if muxer == "webm" else "aac"]
    args += [*extra, "-f", muxer, str(out)]
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    aspect = w / h
    for i in range(n):
        t = 0.0 if still or n == 1 else i / (n - 1)
        z = zoom[0] + (zoom[1] - zoom[0]) * t
        vw = min(iw, ih * aspect) / z
        vh = vw / aspect
        cx = iw / 2 + (t - 0.5) * pan * iw
        cy = ih / 2
        # affine grid: output pixel -> source normalised coordinates
        theta = torch.tensor([[[vw / iw, 0.0, (cx - iw / 2) / (iw / 2)], [0.0, vh / ih, (cy - ih / 2) / (ih / 2)]]],
                             dtype=torch.float32)
        grid = F.affine_grid(theta, [1, 3, h, w], align_corners=False)
        frame = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
        arr = frame.permute(1, 2, 0).numpy() * 255.0
        if noise > 0:
            arr = arr + rng.normal(0.0, noise, arr.shape)
        proc.stdin.write(np.clip(arr + 0.5, 0, 255).astype(np.uint8).tobytes())
    proc.stdin.close()
    err = proc.stderr.read().decode("utf-8", "replace")
    if proc.wait() != 0:
        raise StarcliError(f"{out}: cannot write test clip: {_ffmpeg_error(err)}")
    return out
