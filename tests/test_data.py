"""Dataset layouts and their error messages (starcli.data), plus fake-dataset builders for
the training tests (imported by tests/test_train*.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from starcli.data import ImageStore, default_groups, detect_format, load_dataset, read_image
from starcli.errors import InputError

ATTRS = ["Black_Hair", "Blond_Hair", "Brown_Hair", "Smiling"]
HAIR_RGB = {"Black_Hair": (20, 20, 20), "Blond_Hair": (230, 200, 90), "Brown_Hair": (110, 60, 20)}


def draw_face(labels: dict[str, int], size: int, rng: np.random.Generator, noise: np.ndarray | None = None) -> np.ndarray:
    """A tiny synthetic "face": skin disc, hair band coloured by the hair label, dark mouth if smiling."""
    img = np.full((size, size, 3), 120, np.uint8)
    yy, xx = np.mgrid[:size, :size]
    face = (yy - size * 0.55) ** 2 + (xx - size / 2) ** 2 < (size * 0.35) ** 2
    img[face] = (220, 180, 150)
    hair = next((h for h in HAIR_RGB if labels.get(h)), "Black_Hair")
    img[: size // 4] = HAIR_RGB[hair]
    if labels.get("Smiling"):
        img[int(size * 0.72) : int(size * 0.78), size // 3 : 2 * size // 3] = (150, 30, 30)
    if noise is not None:
        img = np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    return img


def make_csv_dataset(root: Path, n: int = 12, size: int = 16, pairs: bool = True, seed: int = 0) -> Path:
    """labels.csv + images/ (+ pairs.csv + dataset.json), the synth.py layout."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    header = "file," + ",".join(ATTRS)
    rows, pair_rows = [header], ["file,target_file," + ",".join(ATTRS)]
    for i in range(n):
        hair = ATTRS[i % 3]
        lab = {a: int(a == hair) for a in ATTRS[:3]}
        lab["Smiling"] = int(rng.random() < 0.5)
        noise = rng.integers(-8, 9, (size, size, 3)).astype(np.int16)
        name = f"{i:06d}.png"
        Image.fromarray(draw_face(lab, size, rng, noise)).save(root / "images" / name)
        rows.append(name + "," + ",".join(str(lab[a]) for a in ATTRS))
        if pairs:
            tgt = dict(lab)
            if i % 2:
                tgt["Smiling"] = 1 - tgt["Smiling"]
            else:
                new = ATTRS[(i + 1) % 3]
                tgt.update({a: int(a == new) for a in ATTRS[:3]})
            tname = f"{i:06d}_t.png"
            Image.fromarray(draw_face(tgt, size, rng, noise)).save(root / "images" / tname)
            pair_rows.append(f"{name},{tname}," + ",".join(str(tgt[a]) for a in ATTRS))
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    if pairs:
        (root / "pairs.csv").write_text("\n".join(pair_rows) + "\n")
    (root / "dataset.json").write_text(json.dumps({"groups": [ATTRS[:3]], "attributes": ATTRS}))
    return root


def make_celeba_dataset(root: Path, n: int = 6, size: int = 20) -> Path:
    rng = np.random.default_rng(1)
    img_dir = root / "img_align_celeba"
    img_dir.mkdir(parents=True)
    header = ["Black_Hair", "Blond_Hair", "Male", "Smiling"]
    lines = [str(n), " ".join(header)]
    for i in range(n):
        lab = {"Black_Hair": i % 2, "Blond_Hair": 1 - i % 2, "Male": int(i < 3), "Smiling": int(i % 3 == 0)}
        Image.fromarray(draw_face(lab, size, rng)[:, 2:]).save(img_dir / f"{i + 1:06d}.jpg")  # not square
        lines.append(f"{i + 1:06d}.jpg " + " ".join("1" if lab[h] else "-1" for h in header))
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    return root


def make_folder_dataset(root: Path, size: int = 16) -> Path:
    rng = np.random.default_rng(2)
    for k, d in enumerate(["angry", "happy", "neutral"]):
        (root / d).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(draw_face({"Smiling": int(k == 1)}, size, rng)).save(root / d / f"{i}.png")
    return root


# ------------------------------------------------------------------------------------------------


def test_csv_dataset_with_pairs(tmp_path):
    root = make_csv_dataset(tmp_path / "ds", n=6)
    assert detect_format(root) == "csv"
    ds = load_dataset(root)
    assert ds.attributes == ATTRS
    assert ds.groups == [ATTRS[:3]]
    assert ds.labels.shape == (6, 4)
    assert ds.num_pairs == 6
    assert ds.pair_source.tolist() == list(range(6))
    assert ds.pair_labels[0, :3].tolist() == [0.0, 1.0, 0.0]  # image 0 black -> blond
    store = ImageStore(ds.files, 16, in_memory=True, workers=2)
    x = store.get(torch.tensor([0, 2]))
    assert x.shape == (2, 3, 16, 16) and x.dtype == torch.uint8
    lazy = ImageStore(ds.files, 16, in_memory=False, workers=2)
    assert torch.equal(lazy.get(torch.tensor([0, 2])), x)
    assert ds.default_source()[:3].count(1.0) == 1


def test_csv_attr_selection_and_minus_one_labels(tmp_path):
    root = tmp_path / "tsv"
    (root / "images").mkdir(parents=True)
    for i in range(4):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(root / "images" / f"{i}.png")
    (root / "labels.tsv").write_text("file\tA\tB\n0.png\t1\t-1\n1.png\t-1\t1\n2.png\t1\t1\n3.png\t-1\t-1\n")
    ds = load_dataset(root, attrs=["B"])
    assert ds.attributes == ["B"]
    assert ds.labels[:, 0].tolist() == [0.0, 1.0, 1.0, 0.0]
    assert ds.groups == []


def test_celeba_layout(tmp_path):
    root = make_celeba_dataset(tmp_path / "celeba")
    assert detect_format(root) == "celeba"
    ds = load_dataset(root, attrs=["Blond_Hair", "Black_Hair", "Male"])
    assert ds.attributes == ["Blond_Hair", "Black_Hair", "Male"]
    assert ds.groups == [["Blond_Hair", "Black_Hair"]]
    assert ds.labels[0].tolist() == [1.0, 0.0, 1.0]
    img = read_image(ds.files[0], 12)  # centre crop + resize of an 18x20 image
    assert img.shape == (12, 12, 3)


def test_folder_layout(tmp_path):
    root = make_folder_dataset(tmp_path / "rafd")
    assert detect_format(root) == "folders"
    ds = load_dataset(root)
    assert ds.attributes == ["angry", "happy", "neutral"]
    assert ds.groups == [["angry", "happy", "neutral"]]
    assert ds.labels.sum(1).tolist() == [1.0] * 9


def test_default_groups():
    assert default_groups(["Black_Hair", "Wavy_Hair", "Blond_Hair", "Male"]) == [["Black_Hair", "Blond_Hair"]]
    assert default_groups(["Black_Hair", "Male"]) == []


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda r: (r / "images" / "000001.png").unlink(), r"000001\.png: image file not found"),
        (lambda r: (r / "labels.csv").write_text("file,Black_Hair,Blond_Hair\n000000.png,2,0\n"), r"labels\.csv: line 2, column 'Black_Hair': label '2'"),
        (lambda r: (r / "labels.csv").write_text("file,Black_Hair,Blond_Hair\n000000.png,1,0\n000001.png,1,0\n"), r"'Blond_Hair' is never set: empty class"),
        (lambda r: (r / "labels.csv").write_text("file,Black_Hair\n000000.png,1,0\n"), r"labels\.csv: line 2 has 3 fields"),
    ],
)
def test_csv_errors(tmp_path, mutate, match):
    root = make_csv_dataset(tmp_path / "bad", n=4, pairs=False)
    (root / "dataset.json").unlink()
    mutate(root)
    with pytest.raises(InputError, match=match):
        load_dataset(root)


def test_unknown_column_error(tmp_path):
    root = make_csv_dataset(tmp_path / "ds", n=3, pairs=False)
    with pytest.raises(InputError, match=r"labels\.csv: unknown attribute column\(s\) Male; available: Black_Hair"):
        load_dataset(root, attrs=["Black_Hair", "Male"])


def test_celeba_count_mismatch(tmp_path):
    root = make_celeba_dataset(tmp_path / "c")
    txt = root / "list_attr_celeba.txt"
    txt.write_text("99\n" + txt.read_text().split("\n", 1)[1])
    with pytest.raises(InputError, match=r"list_attr_celeba\.txt: count line says 99 images but 6 rows follow"):
        load_dataset(root)


def test_folder_empty_class(tmp_path):
    root = make_folder_dataset(tmp_path / "f")
    (root / "sad").mkdir()
    (root / "sad" / "x.txt").write_text("")
    with pytest.raises(InputError, match=r"sad: domain folder has no images: empty class"):
        load_dataset(root, attrs=["happy", "sad"])


def test_missing_dataset(tmp_path):
    with pytest.raises(InputError, match="dataset not found"):
        load_dataset(tmp_path / "nope")


class _FixedDetector:
    """Finds one face with landmarks at fixed fractions of the image (none in images named 'empty')."""

    def detect(self, images):
        from starcli.detect import Face

        out = []
        for img in images:
            h, w = img.shape[:2]
            if img.mean() < 1:  # black photo: no face
                out.append([])
                continue
            lm = {"left_eye": (0.4 * w, 0.45 * h), "right_eye": (0.6 * w, 0.45 * h), "mouth": (0.5 * w, 0.7 * h)}
            out.append([Face((0.2 * w, 0.2 * h, 0.8 * w, 0.9 * h), 1.0, lm, np.array(list(lm.values())))])
        return out


def test_prepare_with_labels_and_folders(tmp_path):
    from starcli.data import prepare_dataset

    raw = tmp_path / "raw"
    raw.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(draw_face({"Black_Hair": i % 2, "Blond_Hair": 1 - i % 2}, 60, rng)).save(raw / f"p{i}.jpg")
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(raw / "empty.png")
    (tmp_path / "labels.csv").write_text("file,Black_Hair,Blond_Hair\np0.jpg,0,1\np1.jpg,1,0\np2.jpg,-1,1\nempty.png,1,-1\n")
    out = tmp_path / "aligned"
    rep = prepare_dataset(raw, out, image_size=32, labels=tmp_path / "labels.csv", detector=_FixedDetector())
    assert rep == {"images": 4, "aligned": 3, "skipped": 1}
    ds = load_dataset(out)
    assert len(ds) == 3 and ds.attributes == ["Black_Hair", "Blond_Hair"]
    assert read_image(ds.files[0], 32).shape == (32, 32, 3)
    # no labels: the folder tree is mirrored (folder-per-domain stays usable)
    for d in ("a", "b"):
        (raw / d).mkdir()
        Image.fromarray(draw_face({}, 48, rng)).save(raw / d / "x.png")
    out2 = tmp_path / "mirrored"
    rep2 = prepare_dataset(raw, out2, image_size=16, detector=_FixedDetector())
    assert (out2 / "a" / "x.png").is_file() and (out2 / "p0.png").is_file() and rep2["aligned"] == 5
