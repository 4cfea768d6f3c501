"""Procedural faces: determinism, labels, counterfactual pairs, judges, dataset writer, scenes, CLI."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from starcli import synth
from starcli.errors import InputError


def _renders(seed: int, n: int, size: int = 64):
    imgs, labels, masks = [], [], {k: [] for k in synth.MASK_NAMES}
    for i in range(n):
        p, a, _ = synth.dataset_item(seed, i)
        img, m = synth.render_face(p, a, size)
        imgs.append(img)
        labels.append(a)
        for k in m:
            masks[k].append(m[k])
    return np.stack(imgs), labels, {k: np.stack(v) for k, v in masks.items()}


def test_same_seed_same_bytes():
    for i in range(3):
        p1, a1, t1 = synth.dataset_item(7, i)
        p2, a2, t2 = synth.dataset_item(7, i)
        assert (p1, a1, t1) == (p2, a2, t2)
        img1, m1 = synth.render_face(p1, a1, 48)
        img2, m2 = synth.render_face(p2, a2, 48)
        assert img1.tobytes() == img2.tobytes()
        assert all(np.array_equal(m1[k], m2[k]) for k in synth.MASK_NAMES)
    assert synth.dataset_item(7, 0)[0] != synth.dataset_item(8, 0)[0]


def test_render_shapes_and_masks():
    p, a, _ = synth.dataset_item(0, 0)
    img, masks = synth.render_face(p, a, 64)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert list(masks) == list(synth.MASK_NAMES)
    for name, m in masks.items():
        assert m.shape == (64, 64) and m.dtype == bool
        assert m.any(), name
    assert not (masks["face"] & masks["background"]).any()


def test_params_roundtrip_json():
    p = synth.sample_params(np.random.default_rng(3))
    d = json.loads(json.dumps(synth.asdict(p)))
    a = synth.sample_attributes(np.random.default_rng(3))
    assert synth.render_face(d, a, 32)[0].tobytes() == synth.render_face(p, a, 32)[0].tobytes()


def test_labels_exact_and_balanced():
    rng = np.random.default_rng(0)
    n = 4000
    rows = [synth.sample_attributes(rng) for _ in range(n)]
    for r in rows:
        assert list(r) == list(synth.ATTRIBUTES)
        assert sum(r[h] for h in synth.HAIR_COLOURS) == 1
        assert set(r.values()) <= {0, 1}
    for h in synth.HAIR_COLOURS:
        assert abs(np.mean([r[h] for r in rows]) - 0.2) < 0.025, h
    for b in synth.BINARY_ATTRIBUTES:
        assert abs(np.mean([r[b] for r in rows]) - 0.5) < 0.03, b
    targets = [synth.sample_counterfactual(rng, r) for r in rows[:500]]
    for r, t in zip(rows, targets):
        assert 1 <= len(synth.changed_factors(r, t)) <= 2
        assert sum(t[h] for h in synth.HAIR_COLOURS) == 1
    for b in synth.BINARY_ATTRIBUTES:
        assert abs(np.mean([t[b] for t in targets]) - 0.5) < 0.08, b


def test_landmarks_follow_template_without_pose():
    p = synth.replace(synth.sample_params(np.random.default_rng(1)), roll=0.0, scale=1.0, shift=(0.0, 0.0))
    s = 128
    lm = synth.face_landmarks(p, s)
    assert lm["left_eye"] == pytest.approx((0.39463 * s - 0.5, 0.51404 * s - 0.5), abs=0.02)
    assert lm["right_eye"] == pytest.approx((0.60526 * s - 0.5, 0.51404 * s - 0.5), abs=0.02)
    assert lm["mouth"] == pytest.approx((0.49962 * s - 0.5, 0.74727 * s - 0.5), abs=0.02)
    # a posed face: the eyes stay the same distance apart up to the scale
    q = synth.replace(p, roll=8.0, scale=1.05, shift=(0.02, -0.01))
    lq = synth.face_landmarks(q, s)
    d = np.hypot(*np.subtract(lq["right_eye"], lq["left_eye"]))
    assert d == pytest.approx(1.05 * (0.60526 - 0.39463) * s, rel=1e-4)


def test_counterfactual_differs_only_inside_masks():
    for i in range(12):
        p, a, t = synth.dataset_item(3, i)
        img, masks = synth.render_face(p, a, 64)
        img2, masks2 = synth.render_face(p, t, 64)
        assert all(np.array_equal(masks[k], masks2[k]) for k in synth.MASK_NAMES)
        region = synth.changed_region(masks, a, t)
        diff = np.abs(img.astype(int) - img2.astype(int)).max(axis=2)
        assert (diff[~region] > 8).mean() < 0.005, (i, synth.changed_factors(a, t))
        assert (diff[region] > 8).mean() > 0.05, (i, synth.changed_factors(a, t))


def test_judges_recover_labels():
    imgs, labels, masks = _renders(11, 120)
    pred = synth.measure_attributes(imgs, masks)
    assert set(pred) == set(synth.ATTRIBUTES)
    hair = np.stack([pred[h] for h in synth.HAIR_COLOURS], 1)
    assert (hair.sum(1) == 1).all()
    true_hair = np.array([[lab[h] for h in synth.HAIR_COLOURS] for lab in labels])
    assert (hair.argmax(1) == true_hair.argmax(1)).mean() >= 0.97
    for name in synth.BINARY_ATTRIBUTES:
        acc = (pred[name] == np.array([lab[name] for lab in labels])).mean()
        assert acc >= 0.85, (name, acc)


def test_judges_accept_float_tensors():
    torch = pytest.importorskip("torch")
    imgs, _, masks = _renders(12, 6)
    t = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255.0
    a = synth.measure_attributes(imgs, masks)
    b = synth.measure_attributes(t, masks)
    assert all(np.array_equal(a[k], b[k]) for k in synth.ATTRIBUTES)


def _read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_dataset_writer_format_and_resume(tmp_path):
    out = tmp_path / "ds"
    calls = []
    r = synth.generate_dataset(out, 10, seed=5, size=32, pairs=True, workers=0, on_item=calls.append)
    assert r["images"] == 10 and calls[-1] == 10
    labels = _read_csv(out / "labels.csv")
    assert labels[0] == ["file", *synth.ATTRIBUTES]
    assert len(labels) == 11 and labels[1][0] == "images/000000.png"
    for row in labels[1:]:
        assert set(row[1:]) <= {"0", "1"} and sum(int(v) for v in row[1:6]) == 1
        assert (out / row[0]).is_file()
    pairs = _read_csv(out / "pairs.csv")
    assert pairs[0] == ["file", "target_file", *synth.ATTRIBUTES]
    for src, tgt in zip(labels[1:], pairs[1:]):
        assert tgt[0] == src[0] and (out / tgt[1]).is_file()
        a = dict(zip(synth.ATTRIBUTES, map(int, src[1:])))
        t = dict(zip(synth.ATTRIBUTES, map(int, tgt[2:])))
        assert 1 <= len(synth.changed_factors(a, t)) <= 2
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["seed"] == 5 and meta["n"] == 10 and meta["size"] == 32 and meta["complete"]
    assert meta["attributes"] == list(synth.ATTRIBUTES) and meta["groups"] == [list(synth.HAIR_COLOURS)]
    with np.load(out / "masks" / "000003.npz") as z:
        assert sorted(z.files) == sorted(synth.MASK_NAMES)
        assert z["hair"].dtype == np.uint8 and z["hair"].shape == (32, 32)
    assert not list(out.rglob("*.tmp-*"))

    # resume: missing files are rewritten identically, finished ones are skipped
    img3 = (out / "images" / "000003.png").read_bytes()
    pair7 = (out / "pairs" / "000007.png").read_bytes()
    (out / "images" / "000003.png").unlink()
    (out / "pairs" / "000007.png").unlink()
    keep = out / "images" / "000001.png"
    os.utime(keep, (1, 1))
    r2 = synth.generate_dataset(out, 10, seed=5, size=32, pairs=True, workers=0)
    assert r2["rendered"] == 2 and r["rendered"] == 20
    assert (out / "images" / "000003.png").read_bytes() == img3
    assert (out / "pairs" / "000007.png").read_bytes() == pair7
    assert keep.stat().st_mtime == 1
    with pytest.raises(InputError, match="other settings"):
        synth.generate_dataset(out, 10, seed=6, size=32, workers=0)


def test_dataset_writer_workers_match(tmp_path):
    synth.generate_dataset(tmp_path / "a", 10, seed=1, size=24, pairs=False, workers=0)
    synth.generate_dataset(tmp_path / "b", 10, seed=1, size=24, pairs=False, workers=2)
    for f in sorted((tmp_path / "a" / "images").iterdir()):
        assert f.read_bytes() == (tmp_path / "b" / "images" / f.name).read_bytes()
    assert (tmp_path / "a" / "labels.csv").read_text() == (tmp_path / "b" / "labels.csv").read_text()
    assert not (tmp_path / "a" / "pairs.csv").exists()


def test_compose_scene_records():
    img, faces = synth.compose_scene(np.random.default_rng(4), 3, 480, 320, face_px=(70, 110))
    assert img.shape == (320, 480, 3) and img.dtype == np.uint8
    assert 1 <= len(faces) <= 3
    boxes = [f["box"] for f in faces]
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        assert 0 <= x0 < x1 <= 480 + 1 and y1 <= 320 + 1
        for bx0, by0, bx1, by1 in boxes[i + 1:]:
            assert x1 <= bx0 or bx1 <= x0  # side by side, no overlap
        f = faces[i]
        lm = f["landmarks"]
        assert x0 <= lm["left_eye"][0] < lm["right_eye"][0] <= x1
        assert y0 <= lm["mouth"][1] <= y1


def _cli_app() -> typer.Typer:
    from starcli.cli import datasets_cmd

    app = typer.Typer()

    @app.callback()
    def _root() -> None:  # keep "datasets" as a sub-command
        pass

    datasets_cmd.register(app)
    return app


def test_cli_synth_crops_and_scenes(tmp_path):
    runner = CliRunner()
    app = _cli_app()
    out = tmp_path / "cli"
    res = runner.invoke(app, ["datasets", "synth", "-n", "6", "-o", str(out), "--size", "32", "--seed", "2",
                              "--no-pairs", "--workers", "0"], env={"COLUMNS": "120", "NO_COLOR": "1"})
    assert res.exit_code == 0, res.output
    assert "images" in res.output and "6" in res.output
    assert len(list((out / "images").glob("*.png"))) == 6 and not (out / "pairs").exists()
    res = runner.invoke(app, ["datasets", "synth", "--scenes", "2", "-o", str(tmp_path / "sc"), "--width", "320",
                              "--height", "240"], env={"COLUMNS": "120", "NO_COLOR": "1"})
    assert res.exit_code == 0, res.output
    meta = json.loads((tmp_path / "sc" / "scenes.json").read_text())
    assert len(meta["images"]) == 2 and all((tmp_path / "sc" / r["file"]).is_file() for r in meta["images"])
    res = runner.invoke(app, ["datasets", "synth", "-n", "2", "-o", str(out), "--size", "48", "--workers", "0"],
                        env={"COLUMNS": "120", "NO_COLOR": "1"})
    assert res.exit_code == 1 and "other settings" in res.output


@pytest.mark.slow
def test_dlib_finds_scene_faces():
    dlib = pytest.importorskip("dlib")
    det = dlib.get_frontal_face_detector()
    found = total = 0
    for i in range(8):
        rng = np.random.default_rng([0, i])
        img, faces = synth.compose_scene(rng, int(rng.integers(1, 4)), 640, 480)
        dets = list(det(img, 0))
        for f in faces:
            total += 1
            x0, y0, x1, y1 = f["box"]
            found += any(x0 <= (d.left() + d.right()) / 2 <= x1 and y0 <= (d.top() + d.bottom()) / 2 <= y1
                         for d in dets)
    assert found / total >= 0.85, (found, total)
