"""Configuration: one dataclass per section, TOML files, visible precedence.

Precedence: dataclass defaults < the ``--config`` file (else ``./starcli.toml`` if present) <
CLI flags (``overrides``, dotted keys). Unknown keys and wrong types raise :class:`ConfigError`
naming the dotted key. :attr:`Config.sources` records where each value came from, for
``starcli config show``.

>>> cfg = load_config(None, overrides={"run.batch_size": 4}, search_cwd=False)
>>> cfg.run.batch_size, cfg.sources["run.batch_size"], cfg.sources["detect.upsample"]
(4, 'cli', 'default')
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["Config", "DetectConfig", "AlignConfig", "TranslateConfig", "PasteConfig", "RunConfig",
           "VideoConfig", "load_config", "DEFAULT_CONFIG_NAME", "flatten"]

DEFAULT_CONFIG_NAME = "starcli.toml"


@dataclass
class DetectConfig:
    """``[detect]``: face detector plugin and its options."""

    detector: str = "dlib"          #: detector plugin name (``starcli plugins``)
    upsample: int = 0               #: image doublings before detection (0: faces >= ~80 px)
    min_face_size: float = 0.0      #: drop faces smaller than this (pixels)
    largest_only: bool = False      #: keep only the largest face per photo
    max_side: int = 2048            #: photos larger than this are downscaled for detection
    threshold: float = 0.0          #: detector score threshold adjustment


@dataclass
class AlignConfig:
    """``[align]``: how crops are cut (the template comes from the model card)."""

    mode: str = "bicubic"           #: crop interpolation: bicubic (as CelebA) or bilinear


@dataclass
class TranslateConfig:
    """``[translate]``: model, generator backend and the edits."""

    model: str = ""                 #: model name or path; "" = the default model
    backend: str = "auto"           #: generator backend plugin, or auto (fastest available)
    precision: str = ""             #: fp32 / bf16 / fp16; "" = the backend's default
    threads: int = 0                #: torch threads for the generator; 0 = torch's default
    set: list[str] = field(default_factory=list)    #: one edit: ["hair=black", "male"]
    edits: list[str] = field(default_factory=list)  #: several edits, one string each: ["hair=black,male", "young"]
    source: str = "auto"            #: source attributes: auto (critic) or settings, e.g. "hair=brown,male"
    edit_mode: str = ""             #: direct (G(x,c_trg)), difference (x + G(x,c_trg) - G(x,c_src)) or masked (G(x,c_trg) where the edit acts, x elsewhere); "" = the model card's
    strength: float = 1.0           #: scales every edit: 0 = no change, 1 = as the model makes it, up to 4


@dataclass
class PasteConfig:
    """``[paste]``: blending translated faces back into photos."""

    feather: float = 0.04           #: mask edge softness, fraction of the crop size (0, 0.12]
    colour_match: bool = True       #: remove the generator's colour offset at the seam
    detail: bool = True             #: keep the photo's fine detail (paste the change, not the crop)


@dataclass
class RunConfig:
    """``[run]``: batching, workers, outputs."""

    batch_size: int = 8             #: faces (crops) per generator call; photos are batched up to it
    pad_batches: bool = True        #: pad partial batches to 1, 2, 4... crops (few shapes for compiling engines)
    workers: int = 2                #: threads decoding+detecting, and threads pasting+encoding
    queue_size: int = 16            #: photos in flight before the generator, and after it (each way)
    overwrite: bool = False         #: replace existing outputs
    skip_existing: bool = True      #: leave existing outputs alone (a re-run resumes)
    no_face: str = "fail"           #: photo without a face: fail (error line), copy (write it unchanged) or skip
    grid: bool = False              #: also write a comparison sheet per photo
    crops: bool = False             #: also write aligned and translated crops
    aligned: bool = False           #: inputs are already aligned face crops
    report: str = ""                #: write a JSON report to this path
    dry_run: bool = False           #: list what would be done, write nothing
    png_compress_level: int = 1     #: zlib level for PNG outputs (0-9; 1 is fast)
    jpeg_quality: int = 0           #: 0 keeps the input JPEG's quantisation tables; else 1-100
    max_megapixels: float = 250.0   #: refuse larger images (decompression bomb guard)


@dataclass
class VideoConfig:
    """``[video]``: video encoding, streaming, resume and face tracking (``starcli.video``,
    ``starcli.tracking``; docs/video.md)."""

    codec: str = ""                 #: encoder; "" = the container's default (libx264, libvpx-vp9, mpeg4, gif)
    crf: float = -1.0               #: quality; -1 = the codec's default (x264 18, vp9 32; mpeg4: -q:v 3)
    preset: str = ""                #: x264 preset (default fast); vp9: deadline (good/realtime)
    start: float = 0.0              #: start of the time range (seconds)
    end: float = 0.0                #: end of the time range (seconds, exclusive); 0 = to the end
    fps: float = 0.0                #: output frame rate; 0 = the input's (average rate for VFR input)
    audio: bool = True              #: copy the audio streams (stream copy, bit-identical)
    batch_frames: int = 8           #: consecutive frames per generator batch
    queue_depth: int = 2            #: batches buffered decode -> process and process -> encode
    segment_seconds: float = 10.0   #: resume granularity (encoded segments joined at the end)
    detect_every: int = 10          #: full-frame detection on every n-th frame (and after scene cuts)
    region_detect: bool = True      #: on the other frames, detect inside regions around tracked faces (False: extrapolate)
    resume: bool = True             #: continue a killed run from its last finished segment
    strict: bool = True             #: fail on corrupt data the decoder would conceal
    smooth: bool = True             #: smooth landmarks along each face track (one-euro filter)
    min_cutoff: float = 0.5         #: one-euro cutoff of a still face (Hz); lower = smoother
    beta: float = 20.0              #: one-euro speed coefficient (per face size / s); higher = less lag
    d_cutoff: float = 1.0           #: one-euro cutoff of the speed estimate (Hz)
    max_missed: int = 2             #: frames a track is bridged without a detection
    iou_threshold: float = 0.3      #: box IoU to continue a track
    max_centre_distance: float = 0.6  #: else centre distance (face sizes) to continue a track
    scene_cut: float = 0.2          #: colour-histogram distance that resets tracks; 0 = off
    min_hits: int = 1               #: detections before a track's faces are edited


@dataclass
class Config:
    """All sections; ``sources`` maps each dotted key to ``default``, ``file:<path>`` or ``cli``."""

    detect: DetectConfig = field(default_factory=DetectConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    translate: TranslateConfig = field(default_factory=TranslateConfig)
    paste: PasteConfig = field(default_factory=PasteConfig)
    run: RunConfig = field(default_factory=RunConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    sources: dict[str, str] = field(default_factory=dict, repr=False, compare=False)
    file: Path | None = field(default=None, repr=False, compare=False)

    def section(self, name: str) -> Any:
        return getattr(self, name)

    def get(self, dotted: str) -> Any:
        sec, _, key = dotted.partition(".")
        return getattr(getattr(self, sec), key)


SECTIONS = {f.name: f.default_factory for f in fields(Config) if f.name not in ("sources", "file")}  # type: ignore[misc]


def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(dotted: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against ``hint`` (int, float, bool, str, list[str]); ints pass as floats."""
    origin = typing.get_origin(hint)
    if origin in (list,):
        if isinstance(value, (str,)):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{dotted}: expected a list of strings, got {value!r}")
        return list(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{dotted}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{dotted}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{dotted}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if isinstance(value, Path):
            return str(value)
        if not isinstance(value, str):
            raise ConfigError(f"{dotted}: expected a string, got {value!r}")
        return value
    return value


_CHOICES = {
    "run.no_face": ("fail", "copy", "skip"),
    "align.mode": ("bicubic", "bilinear"),
    "translate.precision": ("", "fp32", "bf16", "fp16"),
}
#: ``translate.strength`` bounds (inclusive), also checked by :class:`starcli.translate.FaceTranslator`.
STRENGTH_RANGE: tuple[float, float] = (0.0, 4.0)
_RANGES = {
    "run.batch_size": (1, 1024), "run.workers": (1, 64), "run.queue_size": (1, 4096),
    "run.png_compress_level": (0, 9), "run.jpeg_quality": (0, 100), "detect.upsample": (0, 3),
    "translate.threads": (0, 1024), "translate.strength": STRENGTH_RANGE, "paste.feather": (0.001, 0.12), "run.max_megapixels": (0.001, 1e6),
    "detect.min_face_size": (0, 1e6), "detect.max_side": (64, 1 << 20),
}


def _validate(dotted: str, value: Any) -> None:
    if dotted in _CHOICES and value not in _CHOICES[dotted]:
        raise ConfigError(f"{dotted}: expected one of {', '.join(repr(c) for c in _CHOICES[dotted])}, got {value!r}")
    if dotted in _RANGES:
        lo, hi = _RANGES[dotted]
        if not lo <= value <= hi:
            raise ConfigError(f"{dotted}: expected a value in [{lo}, {hi}], got {value!r}")


def _apply(cfg: Config, dotted: str, value: Any, source: str) -> None:
    sec, _, key = dotted.partition(".")
    if sec not in SECTIONS:
        raise ConfigError(f"{dotted}: unknown section '{sec}' (sections: {', '.join(SECTIONS)})")
    obj = getattr(cfg, sec)
    hints = _type_hints(type(obj))
    if key not in hints:
        raise ConfigError(f"{dotted}: unknown key (keys of [{sec}]: {', '.join(hints)})")
    value = _coerce(dotted, value, hints[key])
    _validate(dotted, value)
    setattr(obj, key, value)
    cfg.sources[dotted] = source


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; errors name the file."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from None


def flatten(table: Mapping[str, Any], source: str = "config") -> dict[str, Any]:
    """``{"run": {"batch_size": 4}}`` -> ``{"run.batch_size": 4}``; non-table sections are errors."""
    flat = {}
    for sec, body in table.items():
        if not isinstance(body, Mapping):
            raise ConfigError(f"{sec}: expected a table ([{sec}] or {sec} = {{...}}) in {source}, got {body!r}")
        for key, value in body.items():
            if isinstance(value, Mapping):
                raise ConfigError(f"{sec}.{key}: nested tables are not supported")
            flat[f"{sec}.{key}"] = value
    return flat


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None, *,
                search_cwd: bool = True) -> Config:
    """Merged configuration: defaults < ``path`` (else ``./starcli.toml`` if it exists) <
    ``overrides`` (dotted keys; a value of None means "not given" and is ignored)."""
    cfg = Config()
    for sec in SECTIONS:
        for f in fields(getattr(cfg, sec)):
            cfg.sources[f"{sec}.{f.name}"] = "default"
    file = Path(path) if path is not None else None
    if file is None and search_cwd and Path(DEFAULT_CONFIG_NAME).is_file():
        file = Path(DEFAULT_CONFIG_NAME)
    if file is not None:
        cfg.file = file
        for dotted, value in flatten(read_toml(file), str(file)).items():
            _apply(cfg, dotted, value, f"file:{file}")
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        _apply(cfg, dotted, value, "cli")
    if cfg.run.overwrite and cfg.sources.get("run.overwrite") == "cli" and cfg.sources.get("run.skip_existing") != "cli":
        cfg.run.skip_existing = False
    return cfg


def as_rows(cfg: Config) -> list[tuple[str, Any, str]]:
    """``(dotted key, value, source)`` for every key, in section order."""
    rows = []
    for sec in SECTIONS:
        for f in fields(getattr(cfg, sec)):
            dotted = f"{sec}.{f.name}"
            rows.append((dotted, getattr(getattr(cfg, sec), f.name), cfg.sources.get(dotted, "default")))
    return rows


def to_dict(cfg: Config) -> dict[str, dict[str, Any]]:
    return {sec: dataclasses.asdict(getattr(cfg, sec)) for sec in SECTIONS}

