"""Video: probe, streamed decode / encode with imageio-ffmpeg's ffmpeg binary, audio copy, and the
video loop (decode thread -> detect + track + align + translate + paste -> encode thread).

Conventions (docs/architecture.md): frames are RGB ``uint8`` numpy arrays ``(H, W, 3)`` at the
video's native (display) size; odd sizes are kept.  Frames are read and written at one constant
rate (:attr:`VideoInfo.rate`, a :class:`~fractions.Fraction`), so variable-frame-rate input gives
a constant-rate output of the same duration and the copied audio stays in sync.

Memory: frames travel in batches of ``batch_frames`` through two queues of depth
``queue_depth``; at most ``(2 * queue_depth + 5) * batch_frames`` frames are alive at once
(``queue_depth + 2`` batches on the decode side, one batch and its edited copies being processed,
``queue_depth`` queued for the encoder, one being encoded), i.e. that many times
``frame_bytes``, plus float32 copies of the face regions of one batch, whatever the video's
length.  See docs/video.md for measured numbers.

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
    "VideoEvent",
    "render_pan_clip",
    "expected_frames",
]

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".mkv", ".avi", ".webm", ".gif", ".m4v", ".flv", ".mpg", ".mpeg", ".wmv"})

# container (by extension) -> (ffmpeg muxer, default codec)
CONTAINERS: dict[str, tuple[str, str]] = {
    ".mp4": ("mp4", "libx264"),
    ".m4v": ("mp4", "libx264"),
    ".mov": ("mov", "libx264"),
    ".mkv": ("matroska", "libx264"),
    ".avi": ("avi", "mpeg4"),
    ".webm": ("webm", "libvpx-vp9"),
    ".gif": ("gif", "gif"),
    ".flv": ("flv", "libx264"),
    ".mpg": ("mpeg", "mpeg2video"),
    ".mpeg": ("mpeg", "mpeg2video"),
    ".wmv": ("asf", "wmv2"),
}
# containers whose segments join cleanly by stream copy (frame-exact); others are written in one
# segment, so a killed run restarts them from the beginning
SEGMENTED = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".gif", ".mpg", ".mpeg"})
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
        # the container duration may include longer audio: only a large mismatch counts
        vfr = vfr or abs(frames - duration * fps) > max(3.0, 0.1 * frames)
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
    limit = expected_frames(info, start, end) - skip_frames if info.frames > 0 else 0
    vf = f"fps={info.rate.numerator}/{info.rate.denominator}"
    if limit > 0 and info.vfr:
        # the fps filter stops at the last frame's timestamp rounded to the new rate: hold the last
        # frame a little so the output covers the whole duration (capped below)
        vf = f"tpad=stop_mode=clone:stop_duration={2.0 / float(info.rate):.6f}," + vf
    if skip_frames > 0:
        vf += f",trim=start_frame={int(skip_frames)}"
    args = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", *_time_args(start, end), "-i", str(info.path),
            "-map", "0:v:0", "-an", "-sn", "-dn", "-vf", vf, "-fps_mode", "passthrough"]
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
                if strict:
                    _check_decode_errors(info.path, drain.lines)  # fail early, before more work
                yield batch
                batch = []
        code = proc.wait()
        drain.join(timeout=5)
        expected = expected_frames(info, start, end) - skip_frames
        if count == 0 and skip_frames == 0:
            raise InputError(info.path, "has no video frames" if info.frames == 0 or start == 0
                             else f"has no video frames after {start:g} s")
        if info.frames > 0 and count < expected - max(2, 0.05 * expected):
            raise InputError(info.path, f"truncated or corrupt: decoded {count + skip_frames} of about "
                                        f"{expected + skip_frames} frames")
        if code != 0:
            raise InputError(info.path, f"cannot decode video: {_ffmpeg_error(drain.text)}")
        if strict:
            _check_decode_errors(info.path, drain.lines)
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


def _check_decode_errors(path: Path, lines: list[str]) -> None:
    bad = [ln for ln in list(lines) if _DECODE_ERR.search(ln)]
    if bad:
        raise InputError(path, f"corrupt video data ({_ffmpeg_error(chr(10).join(bad)).rstrip('.')}; "
                               "set video.strict = false to accept concealed frames)")


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
    native = abs(float(info.rate) - info.tbr) <= 0.01 * max(info.tbr, 1e-6)  # not resampled (``fps``)
    if start <= 0 and end is None and not info.vfr and info.frames > 0 and native:
        return info.frames
    return max(0, int(round((stop - max(start, 0.0)) * float(info.rate))))


# ---------------------------------------------------------------------------------------------
# encoding


@dataclass
class VideoOptions:
    """The ``[video]`` config section's encoding and streaming keys (CLI flags mirror them).

    - ``codec``: encoder; ``""`` = the container's default (libx264 for mp4/mov/mkv, libvpx-vp9
      for webm, mpeg4 for avi, gif for gif).  ``crf``: quality, ``-1`` = the codec's default
      (x264/x265 18, vp9 32, av1 30; for mpeg4 it is the ``-q:v`` scale 1-31, default 3; ignored
      for gif).  ``preset``: x264/x265 preset (default ``fast``), for vp8/vp9 the ``-deadline``
      (good/realtime/best).
    - ``start`` / ``end``: time range in seconds (``end`` exclusive; 0 = to the end).
    - ``fps``: output rate; 0 = the input's (see :attr:`VideoInfo.rate`).
    - ``audio``: copy the audio streams (stream copy, bit-identical); False drops them.
    - ``batch_frames``: consecutive frames per batch (their faces go through the generator in
      one call); ``queue_depth``: batches buffered decode -> process and process -> encode.
    - ``segment_seconds``: resume granularity (encoded segments joined at the end).
    - ``detect_every``: run the detector on the whole of every n-th frame (and on the first
      frame and after each scene cut).  ``region_detect``: on the other frames, run it only in
      regions around the tracked faces (a fraction of the pixels; faces entering the picture
      are found at the next full-frame detection); False: tracks are extrapolated between.
    - ``resume``: continue a killed run from its last finished segment (else start over).
    - ``strict``: fail on corrupt data that the decoder would conceal (else accept it).
    """

    codec: str = ""
    crf: float = -1.0
    preset: str = ""
    start: float = 0.0
    end: float = 0.0
    fps: float = 0.0
    audio: bool = True
    batch_frames: int = 8
    queue_depth: int = 2
    segment_seconds: float = 10.0
    detect_every: int = 10
    region_detect: bool = True
    resume: bool = True
    strict: bool = True

    @classmethod
    def from_config(cls, section: Any = None) -> VideoOptions:
        """From a mapping or an object (e.g. ``Config.video``) with some of these names; other
        names (tracking keys) are ignored.  ``None`` values mean "default"."""
        if section is None:
            return cls()
        if isinstance(section, VideoOptions):
            return section
        src = section if isinstance(section, Mapping) else (
            dataclasses.asdict(section) if dataclasses.is_dataclass(section) else vars(section))
        kwargs = {f.name: src[f.name] for f in dataclasses.fields(cls) if src.get(f.name) is not None}
        opts = cls(**kwargs)
        opts.validate()
        return opts

    @property
    def end_or_none(self) -> float | None:
        return self.end if self.end and self.end > 0 else None

    def validate(self) -> None:
        if self.start < 0:
            raise ConfigError(f"video.start: must be >= 0 seconds, got {self.start!r}")
        if self.end and self.end > 0 and self.end <= self.start:
            raise ConfigError(f"video.end: must be after video.start ({self.start:g} s), got {self.end!r}")
        for key in ("batch_frames", "queue_depth", "detect_every"):
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"video.{key}: must be >= 1, got {getattr(self, key)!r}")
        if self.segment_seconds <= 0:
            raise ConfigError(f"video.segment_seconds: must be > 0, got {self.segment_seconds!r}")
        if self.fps < 0 or self.fps > 1000:
            raise ConfigError(f"video.fps: must be in [0, 1000], got {self.fps!r}")


_SWS_MATRIX = {"bt709": "bt709", "bt470bg": "bt601", "smpte170m": "smpte170m", "bt2020nc": "bt2020",
               "bt2020c": "bt2020", "smpte240m": "smpte240m", "fcc": "fcc"}


def color_args(colorspace: str) -> tuple[str, list[str]]:
    """(scale filter, output tags) that encode RGB with the input's YUV matrix and range and tag
    the output like the input (``colorspace``: :attr:`VideoInfo.colorspace`, e.g.
    ``"tv,bt709"`` or ``"tv,bt709/bt709/bt709"``).  Untagged input: ``("", [])`` (ffmpeg's
    BT.601 default both ways, as it decoded).

    >>> color_args("tv,bt709")
    ('scale=out_color_matrix=bt709:out_range=tv,setparams=colorspace=bt709:color_primaries=bt709:color_trc=bt709:range=tv', ['-colorspace', 'bt709', '-color_primaries', 'bt709', '-color_trc', 'bt709', '-color_range', 'tv'])
    """
    parts = [p.strip() for p in colorspace.split(",") if p.strip()]
    rng = next((p for p in parts if p in ("tv", "pc")), "")
    names = next((p for p in parts if p not in ("tv", "pc")), "")
    matrix, primaries, trc = (names.split("/") + ["", ""])[:3] if "/" in names else (names, names, names)
    if matrix not in _SWS_MATRIX:
        return "", []
    flt = f"scale=out_color_matrix={_SWS_MATRIX[matrix]}" + (f":out_range={rng}" if rng else "")
    tags = ["-colorspace", matrix]
    if primaries in ("bt709", "bt470bg", "smpte170m", "bt2020", "smpte240m", "bt470m", "film"):
        tags += ["-color_primaries", primaries]
    if trc in ("bt709", "smpte170m", "bt2020-10", "bt2020-12", "iec61966-2-1", "gamma22", "gamma28", "linear"):
        tags += ["-color_trc", trc]
    if rng:
        tags += ["-color_range", rng]
    # frames carry their colour properties to the encoder: set them on the frames too
    params: list[str] = []
    for opt, value in zip(tags[0::2], tags[1::2]):
        params.append({"-colorspace": "colorspace", "-color_primaries": "color_primaries", "-color_trc": "color_trc",
                       "-color_range": "range"}[opt] + "=" + value)
    return flt + ",setparams=" + ":".join(params), tags


def encoder_args(ext: str, width: int, height: int, opts: VideoOptions, colorspace: str = "") -> tuple[list[str], bool]:
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
        args += ["-preset", opts.preset or "fast", "-crf", f"{18 if opts.crf < 0 else opts.crf:g}",
                 "-pix_fmt", "yuv444p" if odd else "yuv420p"]
        if codec == "libx265":
            args += ["-tag:v", "hvc1", "-x265-params", "log-level=error"] if muxer in ("mp4", "mov") else \
                ["-x265-params", "log-level=error"]
    elif codec == "libvpx-vp9":
        args += ["-crf", f"{32 if opts.crf < 0 else opts.crf:g}", "-b:v", "0", "-pix_fmt", "yuv420p",
                 "-deadline", opts.preset or "good", "-cpu-used", "4", "-row-mt", "1"]
    elif codec == "libvpx":
        args += ["-crf", f"{10 if opts.crf < 0 else opts.crf:g}", "-b:v", "2M", "-pix_fmt", "yuv420p",
                 "-deadline", opts.preset or "good", "-cpu-used", "4"]
    elif codec in ("libaom-av1", "libsvtav1"):
        args += ["-crf", f"{30 if opts.crf < 0 else opts.crf:g}", "-pix_fmt", "yuv420p"]
    elif codec in ("mpeg4", "mpeg2video", "mpeg1video", "wmv2", "msmpeg4"):
        if codec == "wmv2" and width % 2:
            codec = "msmpeg4"  # wmv2 needs an even width; MS-MPEG4 v3 plays in the same players
            args = ["-c:v", codec]
        args += ["-q:v", f"{3 if opts.crf < 0 else max(1, min(31, int(opts.crf)))}", "-pix_fmt", "yuv420p"]
        if muxer == "avi" and codec == "mpeg4":
            args += ["-vtag", "xvid"]
    elif codec == "gif":
        # one palette per frame: streams (a global palette would buffer the whole clip)
        args += ["-vf", "split[a][b];[a]palettegen=stats_mode=single:reserve_transparent=0[p];"
                        "[b][p]paletteuse=new=1:dither=sierra2_4a"]
    else:
        if opts.crf >= 0:
            args += ["-crf", f"{opts.crf:g}"]
        if opts.preset:
            args += ["-preset", opts.preset]
        if odd and codec not in _ODD_OK_420:
            args += ["-pix_fmt", "yuv444p"]
    if codec != "gif" and colorspace:
        flt, tags = color_args(colorspace)
        if flt:
            args += ["-vf", flt, *tags]
    return args, False


MIN_TAIL_FRAMES = 8
"""A segment shorter than the encoder's reordering delay gets mistimed when joined (seen with
x264 B-frames: a 1-2 frame tail), so a short tail is appended to the previous segment."""


class SegmentWriter:
    """Encode a stream of RGB uint8 ``(H, W, 3)`` frames into numbered segment files.

    Every ``segment_frames`` frames a segment ``seg_<k>.<ext>`` is closed (when ``total_frames``
    is known, a tail of fewer than :data:`MIN_TAIL_FRAMES` frames goes into the last segment); it is written to a
    temporary name and renamed when ffmpeg finished it, so a finished segment is always complete.
    ``first_segment`` continues a numbering (resume).  Call :meth:`close` (or use ``with``) to
    flush the last segment; :meth:`abort` kills ffmpeg and deletes the unfinished segment.
    """

    def __init__(self, workdir: Path, ext: str, width: int, height: int, rate: Fraction, opts: VideoOptions,
                 segment_frames: int, first_segment: int = 0, on_segment: Callable[[int, int], None] | None = None,
                 colorspace: str = "", total_frames: int = 0):
        self.workdir = Path(workdir)
        self.ext = ext
        self.muxer = CONTAINERS[ext][0]
        self.width, self.height, self.rate = width, height, rate
        self.args, _ = encoder_args(ext, width, height, opts, colorspace)
        self.segment_frames = max(1, int(segment_frames))
        self.index = first_segment
        self.on_segment = on_segment
        self._proc: subprocess.Popen | None = None
        self._drain: _StderrDrain | None = None
        self._in_segment = 0
        self.frames_written = 0
        self.total_frames = int(total_frames)

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
        left = self.total_frames - self.frames_written
        if self._in_segment >= self.segment_frames and (self.total_frames <= 0 or left >= MIN_TAIL_FRAMES):
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
                    start: float = 0.0, end: float | None = None, frames: Sequence[int] | None = None,
                    rate: Fraction | None = None) -> None:
    """Join ``segments`` (stream copy) with the audio streams of ``info.path`` (stream copy, same
    time range) into ``out_tmp``.  The audio is only mapped when the probe found some: mapping the
    audio of an input that has none breaks ffmpeg.  ``frames`` (per segment) and ``rate`` give
    each segment its exact duration: without them the concat demuxer derives it from the
    timestamps, which B-frame reordering makes off by a frame (gaps in the joined stream)."""
    rate = rate or (info.rate if info is not None else None)
    muxer = CONTAINERS[ext][0]
    listing = out_tmp.with_name(out_tmp.name + ".concat.txt")
    if len(segments) == 1:  # one segment: plain remux
        args = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y", "-i", str(segments[0])]
    else:
        lines = ["ffconcat version 1.0"]
        for k, p in enumerate(segments):
            lines.append("file '" + str(p.resolve()).replace("'", "'\\''") + "'")
            if frames is not None and rate is not None and k < len(frames):
                lines.append(f"duration {frames[k] / rate.numerator * rate.denominator:.9f}")
        listing.write_text("\n".join(lines) + "\n")
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
# the video loop


@dataclass
class VideoEvent:
    """Progress of one video: ``kind`` is ``start``, ``progress`` (after each batch), ``note`` or
    ``done``; counts are in frames of the selected range.  ``fps`` and ``eta`` derive from them."""

    kind: str
    path: str
    frames_done: int = 0
    frames_total: int = 0
    faces: int = 0
    elapsed: float = 0.0
    message: str = ""
    resumed_frames: int = 0

    @property
    def fps(self) -> float:
        done = self.frames_done - self.resumed_frames
        return done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        rate = self.fps
        return (self.frames_total - self.frames_done) / rate if rate > 0 else None


@dataclass
class VideoReport:
    """Outcome of :func:`process_video`.  ``frames``: frames written (the whole range, resumed
    ones included); ``faces``: face instances edited (detected or bridged by a track);
    ``copied``: no face anywhere, the input was copied unchanged (see ``note``);
    ``stage_seconds``: busy time per stage (decode and encode run in their own threads and
    ffmpeg processes, so the shares overlap in wall time)."""

    input: str
    outputs: list[str]
    frames: int = 0
    faces: int = 0
    tracks: int = 0
    bridged: int = 0
    scene_cuts: int = 0
    full_detections: int = 0  # frames searched whole by the detector
    region_detections: int = 0  # frames searched only around tracked faces
    resumed_frames: int = 0
    seconds: float = 0.0
    copied: bool = False
    note: str = ""
    rate: str = ""
    size: tuple[int, int] = (0, 0)
    audio: bool = False
    stage_seconds: dict[str, float] = field(default_factory=dict)
    peak_queue: int = 0

    @property
    def fps(self) -> float:
        done = self.frames - self.resumed_frames
        return done / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        text = f"{self.frames} frames, {self.faces} faces ({self.tracks} tracks), {self.fps:.1f} fps"
        if self.resumed_frames:
            text += f", resumed after frame {self.resumed_frames}"
        return text + (f"; {self.note}" if self.note else "")


_END = object()


class _Error:
    def __init__(self, exc: BaseException):
        self.exc = exc


def _work_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.starcli-work"


def _job_key(src: Path, info: VideoInfo, opts: VideoOptions, extra: Any) -> str:
    st = src.stat()
    blob = json.dumps({"src": str(src.resolve()), "size": st.st_size, "mtime": st.st_mtime_ns,
                       "rate": str(info.rate), "opts": dataclasses.asdict(opts), "extra": extra},
                      sort_keys=True, default=repr)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _load_state(work: Path, key: str, ext: str) -> list[tuple[int, int]]:
    """(frames, faces) per finished segment of a previous run with the same key ([] = start over)."""
    try:
        state = json.loads((work / "job.json").read_text())
    except (OSError, ValueError):
        return []
    if state.get("key") != key:
        return []
    done = []
    for k, item in enumerate(state.get("segments", [])):
        if not (work / f"seg_{k:05d}{ext}").is_file() or not isinstance(item, list) or len(item) != 2:
            break
        done.append((int(item[0]), int(item[1])))
    return done


def _save_state(work: Path, key: str, segments: list[tuple[int, int]], segment_frames: int) -> None:
    tmp = work / f"job.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps({"key": key, "segment_frames": segment_frames, "segments": segments}))
    os.replace(tmp, work / "job.json")


def _atomic_copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f"{dst.name}.tmp-{os.getpid()}-0")
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(dst, f"cannot write ({exc.strerror or exc})") from None


def _settings_of(pipeline: Any, cfg: Any) -> dict[str, Any]:
    """What, besides the video options, changes the output (for the resume key)."""
    out: dict[str, Any] = {}
    for name in ("detect", "align", "paste", "translate", "video"):
        sec = getattr(cfg, name, None) if cfg is not None else None
        if sec is not None and dataclasses.is_dataclass(sec):
            out[name] = dataclasses.asdict(sec)
    spec = getattr(pipeline, "spec", None)
    out["model"] = getattr(spec, "name", None)
    out["edits"] = [e.label() if hasattr(e, "label") else repr(e) for e in getattr(pipeline, "edits", [])]
    return out


def process_video(src: str | Path, dst: str | Path | Sequence[str | Path], pipeline: Any, cfg: Any = None, *,
                  on_event: Callable[[VideoEvent], None] | None = None, options: VideoOptions | None = None,
                  tracker_config: Any = None) -> VideoReport:
    """Edit every face of video ``src`` into ``dst`` (one path per edit of ``pipeline``).

    ``pipeline``: a :class:`starcli.pipeline.Pipeline` (or anything with its ``edits``,
    ``detect(frames)``, ``align(jobs)``, ``translate(jobs)`` and ``paste(job)`` on
    :class:`~starcli.pipeline.FrameJob` s).  ``cfg``: a :class:`starcli.config.Config`; its
    ``video`` section gives :class:`VideoOptions` and the tracker's
    :class:`~starcli.tracking.TrackerConfig` (``options`` / ``tracker_config`` override).

    Threads: a decoder thread (ffmpeg -> batches of ``batch_frames`` RGB uint8 frames) feeds a
    bounded queue; the calling thread detects (every ``detect_every`` frames), tracks and smooths,
    aligns, translates all faces of the batch in one generator call and pastes; an encoder thread
    writes the frames to ffmpeg from a second bounded queue (segments, see the module docstring).
    Output: same container, size and frame count at a constant rate; audio stream-copied.
    A video without any face is copied byte for byte (whole file) or written re-encoded
    unchanged (time range), with a note.  Raises :class:`InputError` naming ``src`` for bad
    input (nothing is left behind); other failures and interrupts keep finished segments so a
    rerun resumes.
    """
    from starcli.pipeline import FrameJob
    from starcli.detect import add_new_faces
    from starcli.tracking import FaceTracker, TrackerConfig

    t_start = time.perf_counter()
    src = Path(src)
    outs = [Path(dst)] if isinstance(dst, (str, Path)) else [Path(d) for d in dst]
    edits = list(getattr(pipeline, "edits", [None]))
    if len(outs) != len(edits):
        raise InputError(src, f"{len(outs)} output path(s) for {len(edits)} edit(s)")
    vsec = getattr(cfg, "video", None) if cfg is not None else None
    opts = options or VideoOptions.from_config(vsec)
    opts.validate()
    tcfg = TrackerConfig.from_config(tracker_config if tracker_config is not None else vsec)
    ext = outs[0].suffix.lower()
    for out in outs:
        if out.suffix.lower() not in CONTAINERS:
            raise InputError(out, f"unsupported video container '{out.suffix}' "
                                  f"(supported: {', '.join(sorted(CONTAINERS))})")
        if out.resolve() == src.resolve():
            raise InputError(out, "output would overwrite the input")
    info = probe(src)
    if opts.fps > 0:
        info = dataclasses.replace(info, rate=snap_rate(opts.fps))
    start, end = float(opts.start), opts.end_or_none
    if info.duration > 0 and start >= info.duration:
        raise InputError(src, f"--start {start:g} s is past the end of the video ({info.duration:.2f} s)")
    encoder_args(ext, info.width, info.height, opts)  # codec/container mismatch: fail before work
    total = expected_frames(info, start, end)
    whole = start <= 0 and end is None
    keep_audio = opts.audio and info.has_audio and CONTAINERS[ext][0] != "gif"
    report = VideoReport(str(src), [str(o) for o in outs], rate=str(info.rate), size=(info.width, info.height),
                         audio=keep_audio)
    seg_frames = max(1, int(round(opts.segment_seconds * float(info.rate))))
    if ext not in SEGMENTED:
        seg_frames = 1 << 40  # one segment: these muxers do not join cleanly (resume restarts)
    key = _job_key(src, info, opts, _settings_of(pipeline, cfg))
    works = [_work_dir(o) for o in outs]
    done: list[tuple[int, int]] = []
    if opts.resume:
        states = [_load_state(w, key, ext) for w in works]
        n = min(len(s) for s in states)
        done = states[0][:n]
    for w in works:
        if not done and w.exists():
            shutil.rmtree(w, ignore_errors=True)
        w.mkdir(parents=True, exist_ok=True)
        for p in w.glob("*.partial*"):
            p.unlink(missing_ok=True)
        for p in w.glob("seg_*"):
            m = re.match(r"seg_(\d+)", p.name)
            if m and int(m.group(1)) >= len(done):
                p.unlink(missing_ok=True)
    resumed = sum(n for n, _ in done)
    report.resumed_frames = resumed
    seg_state = list(done)
    frame_faces: dict[int, int] = {}
    busy = {"decode": 0.0, "detect": 0.0, "track": 0.0, "align": 0.0, "generator": 0.0, "paste": 0.0, "encode": 0.0}

    def emit(kind: str, done: int = 0, message: str = "") -> None:
        if on_event is not None:
            on_event(VideoEvent(kind, str(src), done, total, report.faces, time.perf_counter() - t_start, message,
                                resumed))

    for w in works:
        _save_state(w, key, seg_state, seg_frames)
    emit("start", resumed)
    if resumed:
        emit("note", resumed, f"resuming after frame {resumed} ({len(done)} finished segments)")

    q_in: queue.Queue = queue.Queue(maxsize=opts.queue_depth)
    q_out: queue.Queue = queue.Queue(maxsize=opts.queue_depth)
    stop = threading.Event()
    state_lock = threading.Lock()
    decoded = [0]

    def put(q: queue.Queue, item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def decoder() -> None:
        gen = None
        try:
            if total > 0 and resumed >= total:
                put(q_in, _END)
                return
            gen = read_frames(info, start=start, end=end, skip_frames=resumed, batch_frames=opts.batch_frames,
                              strict=opts.strict)
            index = resumed
            t0 = time.perf_counter()
            for batch in gen:
                busy["decode"] += time.perf_counter() - t0
                if not put(q_in, (index, batch)):
                    return
                index += len(batch)
                decoded[0] = index
                t0 = time.perf_counter()
            busy["decode"] += time.perf_counter() - t0
            put(q_in, _END)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            put(q_in, _Error(exc))
        finally:
            if gen is not None:
                gen.close()

    def segment_done(k: int, nframes: int) -> None:
        with state_lock:
            first = sum(n for n, _ in seg_state[:k])
            faces = sum(frame_faces.pop(i, 0) for i in range(first, first + nframes))
            seg_state[k:] = [(nframes, faces)]
            for w in works:
                _save_state(w, key, seg_state, seg_frames)

    writers = [SegmentWriter(w, ext, info.width, info.height, info.rate, opts, seg_frames, len(done),
                             on_segment=segment_done if e == len(outs) - 1 else None, colorspace=info.colorspace,
                             total_frames=max(0, total - resumed))
               for e, w in enumerate(works)]
    enc_error: list[BaseException] = []
    written = [resumed]

    def encoder() -> None:
        try:
            while True:
                try:
                    item = q_out.get(timeout=0.1)
                except queue.Empty:
                    if stop.is_set():
                        return
                    continue
                if item is _END:
                    break
                index, per_edit = item
                t0 = time.perf_counter()
                for e, frames in enumerate(per_edit):
                    for f in frames:
                        writers[e].write(f)
                written[0] = index + len(per_edit[0])
                busy["encode"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            for wr in writers:
                wr.close()
            busy["encode"] += time.perf_counter() - t0
        except BaseException as exc:  # noqa: BLE001
            enc_error.append(exc)
            stop.set()
            for wr in writers:
                wr.abort()
            while True:  # unblock the main thread
                try:
                    q_out.get_nowait()
                except queue.Empty:
                    break

    threads = [threading.Thread(target=decoder, name="starcli-video-decode", daemon=True),
               threading.Thread(target=encoder, name="starcli-video-encode", daemon=True)]
    for th in threads:
        th.start()
    tracker = FaceTracker(tcfg, fps=float(info.rate))
    detect_every = max(1, int(opts.detect_every))
    first_index: int | None = None
    ok = False
    try:
        while True:
            item = None
            while item is None:
                if enc_error:
                    raise enc_error[0]
                try:
                    item = q_in.get(timeout=0.1)
                except queue.Empty:
                    continue
            if item is _END:
                break
            if isinstance(item, _Error):
                raise item.exc
            index, frames = item
            if first_index is None:
                first_index = index
            report.peak_queue = max(report.peak_queue, q_in.qsize() + q_out.qsize())
            t0 = time.perf_counter()
            todo = [i for i in range(len(frames)) if (index + i) % detect_every == 0 or index + i == first_index]
            found = pipeline.detect([frames[i] for i in todo]) if todo else []
            report.full_detections += len(todo)
            detections: dict[int, list] = dict(zip(todo, found))
            t_track = 0.0
            jobs = []
            for i, f in enumerate(frames):
                t_a = time.perf_counter()
                cut = tracker.check_cut(f)
                t_track += time.perf_counter() - t_a
                faces = detections.get(i)
                if faces is not None and opts.region_detect and tracker.tracks:
                    # tracked faces keep coming from their regions (the same scan as on the
                    # other frames: no jump every detect_every frames); the whole frame adds new ones
                    faces = add_new_faces(pipeline.detect_regions(f, tracker.predicted_boxes(index + i)), faces)
                elif faces is None and cut:  # new shot: search the whole frame
                    faces = pipeline.detect([f])[0]
                    report.full_detections += 1
                elif faces is None and opts.region_detect:
                    faces = pipeline.detect_regions(f, tracker.predicted_boxes(index + i))
                    report.region_detections += 1
                t_a = time.perf_counter()
                tracked = tracker.update(index + i, faces)
                t_track += time.perf_counter() - t_a
                jobs.append(FrameJob(pixels=f, faces=[t.face for t in tracked], key=index + i))
            t1 = time.perf_counter() - t_track
            t2 = time.perf_counter()
            pipeline.align(jobs)
            t3 = time.perf_counter()
            pipeline.translate(jobs)
            t4 = time.perf_counter()
            for j in jobs:
                pipeline.paste(j)
            t5 = time.perf_counter()
            busy["detect"] += t1 - t0
            busy["track"] += t2 - t1
            busy["align"] += t3 - t2
            busy["generator"] += t4 - t3
            busy["paste"] += t5 - t4
            nfaces = sum(len(j.faces) for j in jobs)
            report.faces += nfaces
            with state_lock:
                for j in jobs:
                    if j.faces:
                        frame_faces[j.key] = len(j.faces)
            per_edit = [[j.results[e] for j in jobs] for e in range(len(outs))]
            del jobs
            if not put(q_out, (index, per_edit)):
                break
            emit("progress", index + len(frames))
        put(q_out, _END)
        threads[1].join()
        if enc_error:
            raise enc_error[0]
        frames_total = written[0]
        if frames_total == 0:
            raise InputError(src, "has no video frames" + (f" in {start:g}-{end:g} s" if not whole else ""))
        report.frames = frames_total
        report.faces += sum(f for _, f in done)
        report.tracks, report.bridged, report.scene_cuts = (tracker.stats["tracks"], tracker.stats["bridged"],
                                                            tracker.stats["scene_cuts"])
        t0 = time.perf_counter()
        any_face = report.faces > 0
        for out, w in zip(outs, works):
            if not any_face and whole:
                _atomic_copy(src, out)
                continue
            segments = sorted(w.glob(f"seg_*{ext}"))
            segments = [p for p in segments if ".partial" not in p.name]
            tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}-0")
            counts = [n for n, _ in seg_state]
            concat_segments(segments, tmp, ext, info if keep_audio else None, start, end, counts, info.rate)
            got, _ = _count_packets(tmp)
            if got != frames_total:
                tmp.unlink(missing_ok=True)
                raise StarcliError(f"{out}: joined video has {got} frames, expected {frames_total}; "
                                   "nothing written (run again to start over)")
            os.replace(tmp, out)
        busy["encode"] += time.perf_counter() - t0
        if not any_face:
            report.copied = whole
            report.note = ("no faces found: copied unchanged (byte-for-byte copy of the input)" if whole else
                           "no faces found in the range: written unchanged (re-encoded)")
            emit("note", frames_total, report.note)
        ok = True
    except InputError:
        stop.set()
        for w in works:  # bad input: leave nothing behind
            shutil.rmtree(w, ignore_errors=True)
        raise
    finally:
        stop.set()
        for th in threads:
            th.join(timeout=30)
        for wr in writers:
            wr.abort()
        for out in outs:
            tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}-0")
            tmp.unlink(missing_ok=True)
    if ok:
        for w in works:
            shutil.rmtree(w, ignore_errors=True)
    report.seconds = time.perf_counter() - t_start
    report.stage_seconds = {k: round(v, 4) for k, v in busy.items()}
    emit("done", report.frames)
    return report


# ---------------------------------------------------------------------------------------------
# test / benchmark clips


def render_pan_clip(image: np.ndarray, out: str | Path, size: tuple[int, int], seconds: float = 1.0,
                    fps: float = 25, *, audio: bool = False, zoom: tuple[float, float] = (1.0, 1.25),
                    pan: float = 0.08, still: bool = False, center: tuple[float, float] = (0.5, 0.5), extra: Sequence[str] = (),
                    codec_args: Sequence[str] | None = None, noise: float = 0.0, seed: int = 0) -> Path:
    """Write a pan/zoom clip over ``image`` (RGB uint8 ``(H, W, 3)``) at ``size = (W, H)``.

    The view is the region of aspect ``W/H`` around ``center`` (fractions of the image), zoomed from ``zoom[0]`` to ``zoom[1]``
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
        args += ["-map", "1:a", "-c:a", {"webm": "libopus", "mpeg": "mp2", "asf": "wmav2"}.get(muxer, "aac")]
    args += [*extra, "-f", muxer, str(out)]
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    aspect = w / h
    for i in range(n):
        t = 0.0 if still or n == 1 else i / (n - 1)
        z = zoom[0] + (zoom[1] - zoom[0]) * t
        vw = min(iw, ih * aspect) / z
        vh = vw / aspect
        cx = center[0] * iw + (t - 0.5) * pan * iw
        cy = center[1] * ih
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
