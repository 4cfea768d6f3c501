"""Labelled face datasets for training and evaluation.

Supported layouts (``load_dataset(path, format="auto")`` recognises them):

- ``csv``: ``DIR/labels.csv`` (or ``.tsv``, or a CSV/TSV file given directly) with a header
  ``file,<attr>,...`` and 0/1 or -1/1 values; images under ``DIR/images/`` (or next to the file).
  An optional ``DIR/pairs.csv`` (``file,target_file,<attrs...>``) lists counterfactual pairs: the
  same face rendered with a few attributes changed, labelled with the target's attributes.
  An optional ``DIR/dataset.json`` may declare exclusive ``groups``.
- ``celeba``: an image folder plus ``list_attr_celeba.txt`` (a count line, a header line of
  attribute names, then ``<file> <1/-1 ...>`` rows).
- ``folders``: one subfolder per domain (RaFD style); the subfolder names form one exclusive group.

Conventions: labels are ``(N, C)`` float32 0/1 in the order of ``attributes``; images come out of
:class:`ImageStore` as ``(B, 3, S, S)`` uint8 RGB, centre-cropped to a square and resized to ``S``.
Errors are :class:`starcli.errors.InputError` naming the offending file.
"""

from __future__ import annotations

import csv
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from starcli.errors import InputError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
HAIR_COLOURS = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Red_Hair", "Gray_Hair", "Auburn_Hair", "White_Hair")

__all__ = [
    "LabeledImages",
    "ImageStore",
    "load_dataset",
    "detect_format",
    "read_image",
    "default_groups",
    "prepare_dataset",
]


@dataclass
class LabeledImages:
    """A labelled image set (paths + labels, pixels are read by :class:`ImageStore`).

    ``files``: absolute image paths; ``labels``: ``(N, C)`` float32 0/1; ``groups``: exclusive
    attribute lists (each a sub-list of ``attributes``). ``pair_source`` (``(M,)`` long, indices
    into ``files``), ``pair_files`` and ``pair_labels`` (``(M, C)``) describe counterfactual pairs.
    """

    root: Path
    format: str
    attributes: list[str]
    groups: list[list[str]]
    files: list[Path]
    labels: Tensor
    pair_source: Tensor | None = None
    pair_files: list[Path] = field(default_factory=list)
    pair_labels: Tensor | None = None

    def __len__(self) -> int:
        return len(self.files)

    @property
    def num_pairs(self) -> int:
        return 0 if self.pair_source is None else int(self.pair_source.numel())

    def group_indices(self) -> list[list[int]]:
        """Column indices of each exclusive group."""
        return [[self.attributes.index(a) for a in g] for g in self.groups]

    def default_source(self) -> list[float]:
        """Most common label per attribute; for a group, one-hot of its most common member."""
        labels = self.labels
        mean = labels.mean(0) if len(labels) else torch.zeros(len(self.attributes))
        out = (mean >= 0.5).float()
        for idx in self.group_indices():
            counts = labels[:, idx].sum(0)
            out[idx] = 0.0
            out[idx[int(counts.argmax())]] = 1.0
        return [float(v) for v in out]


# ----------------------------------------------------------------------------------------------
# Reading images
# ----------------------------------------------------------------------------------------------


def read_image(path: Path, size: int) -> np.ndarray:
    """Read an RGB image, centre-crop to a square, resize to ``size``: ``(size, size, 3)`` uint8."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            im = im.convert("RGB")
            w, h = im.size
            if w != h:
                s = min(w, h)
                left, top = (w - s) // 2, (h - s) // 2
                im = im.crop((left, top, left + s, top + s))
            if im.size[0] != size:
                im = im.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0)
            return np.asarray(im, dtype=np.uint8).copy()
    except FileNotFoundError:
        raise InputError(path, "image file not found") from None
    except OSError as exc:
        raise InputError(path, f"cannot read image ({exc})") from None


class ImageStore:
    """Pixels of a list of image files, in memory or read lazily.

    ``get(indices)`` returns ``(B, 3, S, S)`` uint8 RGB. In memory, the whole set is decoded once
    into one uint8 tensor (N x 3 x S x S bytes); lazily, each batch is decoded by a thread pool
    (Pillow releases the GIL while decoding).
    """

    def __init__(self, files: Sequence[Path], image_size: int, *, in_memory: bool = True, workers: int = 4):
        self.files = list(files)
        self.image_size = image_size
        self.workers = max(1, workers)
        self._pool = ThreadPoolExecutor(self.workers) if (self.workers > 1) else None
        self.pixels: Tensor | None = None
        if in_memory:
            self.pixels = self._decode(range(len(self.files)))

    @staticmethod
    def bytes_needed(n: int, image_size: int) -> int:
        return n * 3 * image_size * image_size

    def _decode(self, indices: Iterable[int]) -> Tensor:
        idx = list(indices)
        out = torch.empty((len(idx), 3, self.image_size, self.image_size), dtype=torch.uint8)

        def one(k: int) -> None:
            arr = read_image(self.files[idx[k]], self.image_size)
            out[k].copy_(torch.from_numpy(arr).permute(2, 0, 1))

        if self._pool is not None and len(idx) > 1:
            list(self._pool.map(one, range(len(idx))))
        else:
            for k in range(len(idx)):
                one(k)
        return out

    def get(self, indices: Tensor) -> Tensor:
        if self.pixels is not None:
            return self.pixels.index_select(0, indices)
        return self._decode(int(i) for i in indices)

    def __len__(self) -> int:
        return len(self.files)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None


# ----------------------------------------------------------------------------------------------
# Dataset layouts
# ----------------------------------------------------------------------------------------------


def detect_format(path: Path) -> str:
    """Guess the layout of ``path``: ``csv``, ``celeba`` or ``folders``."""
    path = Path(path)
    if path.is_file():
        if path.name.startswith("list_attr") and path.suffix == ".txt":
            return "celeba"
        return "csv"
    if not path.is_dir():
        raise InputError(path, "dataset not found")
    if _find_labels_csv(path) is not None:
        return "csv"
    if (path / "list_attr_celeba.txt").is_file() or (path / "Anno" / "list_attr_celeba.txt").is_file():
        return "celeba"
    subdirs = [d for d in path.iterdir() if d.is_dir() and not d.name.startswith(".")]
    if subdirs and any(_list_images(d) for d in subdirs):
        return "folders"
    raise InputError(path, "no labels.csv/labels.tsv, list_attr_celeba.txt or class subfolders found")


def load_dataset(
    path: str | Path,
    *,
    format: str = "auto",
    attrs: Sequence[str] | None = None,
    groups: Sequence[Sequence[str]] | None = None,
    use_pairs: bool = True,
    check_files: bool = True,
    require_classes: bool = True,
) -> LabeledImages:
    """Read a dataset's file list and labels (not its pixels).

    ``attrs`` selects and orders attribute columns (default: all). ``groups`` declares exclusive
    attribute groups; default: ``dataset.json`` groups if present, else the recognised hair colours.
    Raises :class:`InputError` for missing files, unknown columns, bad label values, and (with
    ``require_classes``, for training) an attribute that is never set or never absent.
    """
    path = Path(path)
    fmt = detect_format(path) if format == "auto" else format
    attrs = list(attrs) if attrs else None
    if fmt == "csv":
        ds = _load_csv_dataset(path, attrs, use_pairs)
    elif fmt == "celeba":
        ds = _load_celeba(path, attrs)
    elif fmt in ("folders", "folder"):
        ds = _load_folders(path, attrs)
    else:
        raise InputError(path, f"unknown dataset format {format!r} (use auto, csv, celeba or folders)")
    if groups:
        ds.groups = [list(g) for g in groups]
    for g in ds.groups:
        for a in g:
            if a not in ds.attributes:
                raise InputError(path, f"group {g} names {a!r}, which is not a selected attribute {ds.attributes}")
    ds.groups = [g for g in ds.groups if len(g) >= 2] if fmt != "folders" else ds.groups
    if len(ds) == 0:
        raise InputError(path, "dataset has no images")
    if require_classes:
        _check_classes(ds)
    if check_files:
        missing = next((f for f in ds.files if not f.is_file()), None)
        if missing is None:
            missing = next((f for f in ds.pair_files if not f.is_file()), None)
        if missing is not None:
            raise InputError(missing, "image file not found (listed in the dataset labels)")
    return ds


def default_groups(attributes: Sequence[str]) -> list[list[str]]:
    """Recognised exclusive groups among ``attributes``: the hair colours (``*_Hair``)."""
    hair = [a for a in attributes if a in HAIR_COLOURS]
    return [hair] if len(hair) >= 2 else []


def _check_classes(ds: LabeledImages) -> None:
    counts = ds.labels.sum(0)
    n = len(ds)
    grouped = {a for g in ds.groups for a in g}
    for k, a in enumerate(ds.attributes):
        c = int(counts[k])
        if c == 0:
            raise InputError(ds.root, f"attribute {a!r} is never set: empty class")
        if c == n and a not in grouped and n > 1:
            raise InputError(ds.root, f"attribute {a!r} is set on every image: its absence is an empty class")


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def _find_labels_csv(folder: Path) -> Path | None:
    for name in ("labels.csv", "labels.tsv", "attributes.csv", "attributes.tsv"):
        if (folder / name).is_file():
            return folder / name
    return None


def _read_table(path: Path) -> tuple[list[str], list[list[str]]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise InputError(path, "empty label file")
    first = lines[0]
    if path.suffix.lower() == ".tsv" or ("\t" in first and "," not in first):
        delim = "\t"
    else:
        delim = ","
    rows = list(csv.reader(lines, delimiter=delim))
    header = [h.strip() for h in rows[0]]
    return header, [[c.strip() for c in r] for r in rows[1:]]


def _parse_label(value: str, path: Path, line: int, column: str) -> float:
    if value in ("1", "1.0", "+1"):
        return 1.0
    if value in ("0", "0.0", "-1", "-1.0"):
        return 0.0
    raise InputError(path, f"line {line}, column {column!r}: label {value!r} is not 0/1 or -1/1")


def _select_columns(path: Path, header: list[str], first: int, attrs: list[str] | None) -> tuple[list[str], list[int]]:
    available = header[first:]
    if attrs is None:
        attrs = available
    unknown = [a for a in attrs if a not in available]
    if unknown:
        raise InputError(path, f"unknown attribute column(s) {', '.join(unknown)}; available: {', '.join(available)}")
    if len(set(attrs)) != len(attrs):
        raise InputError(path, f"attributes listed twice in {attrs}")
    return list(attrs), [header.index(a) for a in attrs]


def _image_dir(root: Path) -> Path:
    return root / "images" if (root / "images").is_dir() else root


def _resolve(name: str, base_dirs: Sequence[Path]) -> Path:
    p = Path(name)
    if p.is_absolute():
        return p
    for b in base_dirs:
        if (b / p).exists():
            return b / p
    return base_dirs[0] / p


def _read_groups_json(root: Path) -> list[list[str]] | None:
    meta = root / "dataset.json"
    if not meta.is_file():
        return None
    try:
        data = json.loads(meta.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(meta, f"invalid JSON ({exc})") from None
    groups = data.get("groups") if isinstance(data, dict) else None
    if groups is None:
        return None
    if isinstance(groups, dict):
        groups = list(groups.values())
    if not isinstance(groups, list) or not all(isinstance(g, list) for g in groups):
        raise InputError(meta, "'groups' must be a list of attribute-name lists")
    return [[str(a) for a in g] for g in groups]


def _load_csv_dataset(path: Path, attrs: list[str] | None, use_pairs: bool) -> LabeledImages:
    if path.is_dir():
        root = path
        table = _find_labels_csv(path)
        if table is None:
            raise InputError(path, "no labels.csv or labels.tsv")
    else:
        root, table = path.parent, path
    header, rows = _read_table(table)
    if not header or header[0].lower() not in ("file", "filename", "image", "path", "image_id"):
        raise InputError(table, f"first header column must be the file name ('file'), got {header[:1]}")
    attributes, cols = _select_columns(table, header, 1, attrs)
    bases = [_image_dir(root), root]
    files: list[Path] = []
    labels = np.zeros((len(rows), len(attributes)), dtype=np.float32)
    for i, r in enumerate(rows):
        if len(r) != len(header):
            raise InputError(table, f"line {i + 2} has {len(r)} fields, header has {len(header)}")
        files.append(_resolve(r[0], bases))
        for j, c in enumerate(cols):
            labels[i, j] = _parse_label(r[c], table, i + 2, header[c])
    groups = _read_groups_json(root)
    if groups is None:
        groups = default_groups(attributes)
    else:
        groups = [[a for a in g if a in attributes] for g in groups]
    ds = LabeledImages(root, "csv", attributes, groups, files, torch.from_numpy(labels))
    pairs = root / "pairs.csv"
    if use_pairs and pairs.is_file():
        _load_pairs(ds, pairs, bases)
    return ds


def _load_pairs(ds: LabeledImages, table: Path, bases: list[Path]) -> None:
    header, rows = _read_table(table)
    if len(header) < 2 or header[1] != "target_file":
        raise InputError(table, "header must start with 'file,target_file'")
    _, cols = _select_columns(table, header, 2, ds.attributes)
    index = {str(f): i for i, f in enumerate(ds.files)}
    src: list[int] = []
    targets: list[Path] = []
    labels = np.zeros((len(rows), len(ds.attributes)), dtype=np.float32)
    for i, r in enumerate(rows):
        if len(r) != len(header):
            raise InputError(table, f"line {i + 2} has {len(r)} fields, header has {len(header)}")
        s = index.get(str(_resolve(r[0], bases)))
        if s is None:
            raise InputError(table, f"line {i + 2}: source {r[0]!r} is not listed in the labels file")
        src.append(s)
        targets.append(_resolve(r[1], bases))
        for j, c in enumerate(cols):
            labels[i, j] = _parse_label(r[c], table, i + 2, header[c])
    if src:
        ds.pair_source = torch.tensor(src, dtype=torch.long)
        ds.pair_files = targets
        ds.pair_labels = torch.from_numpy(labels)


def _load_celeba(path: Path, attrs: list[str] | None) -> LabeledImages:
    if path.is_file():
        table, root = path, path.parent
    else:
        root = path
        table = path / "list_attr_celeba.txt"
        if not table.is_file():
            table = path / "Anno" / "list_attr_celeba.txt"
    try:
        lines = [ln for ln in table.read_text().splitlines() if ln.strip()]
    except FileNotFoundError:
        raise InputError(table, "file not found") from None
    if len(lines) < 2:
        raise InputError(table, "expected a count line and a header line")
    try:
        count = int(lines[0].split()[0])
    except ValueError:
        raise InputError(table, f"first line must be the image count, got {lines[0][:40]!r}") from None
    header = lines[1].split()
    rows = [ln.split() for ln in lines[2:]]
    if count != len(rows):
        raise InputError(table, f"count line says {count} images but {len(rows)} rows follow")
    attributes, cols = _select_columns(table, ["file", *header], 1, attrs)
    candidates = [root / "images", root / "img_align_celeba", root / "Img" / "img_align_celeba", root]
    img_dir = next((d for d in candidates if d.is_dir() and d != root), root)
    files, labels = [], np.zeros((len(rows), len(attributes)), dtype=np.float32)
    for i, r in enumerate(rows):
        if len(r) != len(header) + 1:
            raise InputError(table, f"line {i + 3} has {len(r) - 1} labels, header has {len(header)}")
        files.append(img_dir / r[0])
        for j, c in enumerate(cols):
            labels[i, j] = _parse_label(r[c], table, i + 3, attributes[j])
    return LabeledImages(root, "celeba", attributes, default_groups(attributes), files, torch.from_numpy(labels))


def _load_folders(path: Path, attrs: list[str] | None) -> LabeledImages:
    if not path.is_dir():
        raise InputError(path, "folder-per-domain dataset must be a directory")
    domains = sorted(d.name for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    if attrs is not None:
        unknown = [a for a in attrs if a not in domains]
        if unknown:
            raise InputError(path, f"no subfolder for {', '.join(unknown)}; found: {', '.join(domains)}")
        domains = list(attrs)
    if len(domains) < 2:
        raise InputError(path, f"need at least two domain subfolders, found {domains}")
    files: list[Path] = []
    rows: list[int] = []
    for k, d in enumerate(domains):
        imgs = _list_images(path / d)
        if not imgs:
            raise InputError(path / d, "domain folder has no images: empty class")
        files += imgs
        rows += [k] * len(imgs)
    labels = torch.zeros(len(files), len(domains))
    labels[torch.arange(len(files)), torch.tensor(rows)] = 1.0
    return LabeledImages(path, "folders", domains, [list(domains)], files, labels)


def memory_fits(n: int, image_size: int, limit_mb: int) -> bool:
    """True when ``n`` decoded images of side ``image_size`` fit in ``limit_mb`` megabytes."""
    return ImageStore.bytes_needed(n, image_size) <= limit_mb * 1024 * 1024


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# ----------------------------------------------------------------------------------------------
# prepare: raw photos -> aligned crops with translate's geometry
# ----------------------------------------------------------------------------------------------


def prepare_dataset(
    raw: str | Path,
    out: str | Path,
    *,
    image_size: int = 128,
    labels: str | Path | None = None,
    detector: Any = "dlib",
    upsample: int = 0,
    mode: str = "bicubic",
    template: dict[str, Sequence[float]] | None = None,
    on_item: Callable[[int, int], None] | None = None,
) -> dict[str, int]:
    """Detect the largest face of every photo under ``raw`` and write its aligned crop to ``out``.

    Crops use :func:`starcli.align.crop_faces` with the CelebA template (or ``template``), the
    geometry ``translate`` uses for models trained here. Without ``labels`` the folder tree is
    mirrored (``raw/happy/a.jpg`` -> ``out/happy/a.png``: folder-per-domain stays usable); with a
    label file (CSV/TSV or ``list_attr_celeba.txt``, rows matched by file name) crops go to
    ``out/images/`` and ``out/labels.csv`` (0/1) lists the aligned ones. ``detector``: a plugin
    name or an object with ``detect(images) -> list[list[Face]]``. Returns counts ``images``,
    ``aligned``, ``skipped`` (no face).
    """
    from PIL import Image

    from starcli import media
    from starcli.align import CELEBA_TEMPLATE, crop_faces

    raw, out = Path(raw), Path(out)
    if not raw.is_dir():
        raise InputError(raw, "not a folder of photos")
    photos = sorted(p for p in raw.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not photos:
        raise InputError(raw, "no photos found (png, jpg, bmp, webp, tif)")
    table: LabeledImages | None = None
    if labels is not None:
        table = load_dataset(labels, check_files=False, require_classes=False, use_pairs=False)
    if isinstance(detector, str):
        from starcli import plugins

        cls = plugins.get(plugins.DETECTORS, detector)
        detector = cls.from_config({"upsample": upsample, "largest_only": True})
    tpl = dict(template or CELEBA_TEMPLATE)
    aligned: dict[Path, Path] = {}  # photo -> crop
    skipped = 0
    for k, photo in enumerate(photos):
        rel = photo.relative_to(raw).with_suffix(".png")
        dest = (out / "images" / rel) if table is not None else (out / rel)
        dec = media.decode_image(photo)
        img = dec.rgb8()
        faces = detector.detect([img])[0]
        if not faces:
            skipped += 1
        else:
            face = max(faces, key=lambda f: f.size)
            crops, _, _ = crop_faces([media.to_tensor(img)], [[face]], image_size, tpl, mode=mode)
            arr = media.from_tensor(crops[0])
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}.png")
            Image.fromarray(arr).save(tmp)
            os.replace(tmp, dest)
            aligned[photo] = dest
        if on_item is not None:
            on_item(k + 1, len(photos))
    if table is not None:
        by_name = {f.name: i for i, f in enumerate(table.files)}
        rows = ["file," + ",".join(table.attributes)]
        for photo, dest in aligned.items():
            i = by_name.get(photo.name)
            if i is None:
                continue
            values = ",".join(str(int(v)) for v in table.labels[i].tolist())
            rows.append(f"{dest.relative_to(out).as_posix()},{values}")
        text = "\n".join(rows) + "\n"
        tmp = out / f"labels.csv.tmp-{os.getpid()}"
        out.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text)
        os.replace(tmp, out / "labels.csv")
        if table.groups:
            (out / "dataset.json").write_text(json.dumps({"groups": table.groups, "attributes": table.attributes}) + "\n")
    return {"images": len(photos), "aligned": len(aligned), "skipped": skipped}
