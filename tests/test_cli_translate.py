"""`starcli translate` end to end on real photos (dlib detector, tiny random model, CPU)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from starcli import media
from starcli.cli import app

DATA = Path(__file__).parent / "data"
ENV = {"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}


def run(*args: str):
    argv = [str(a) for a in args]
    if argv[0] == "translate" and "--backend" not in argv:
        argv += ["--backend", "cpu"]  # independent of which faster plugins are installed
    return CliRunner().invoke(app, argv, env=ENV)


def _make_inputs(folder: Path) -> None:
    folder.mkdir(parents=True)
    shutil.copy(DATA / "astronaut.png", folder / "astronaut.png")
    shutil.copy(DATA / "grace_hopper.jpg", folder / "grace_hopper.jpg")
    (folder / "people").mkdir()
    for name in ("fairface_0001.jpg", "fairface_0020.jpg"):
        shutil.copy(DATA / name, folder / "people" / name)
    astro = np.asarray(Image.open(DATA / "astronaut.png").convert("RGB"))
    alpha = np.tile(np.linspace(40, 255, 512).astype(np.uint8), (512, 1))
    Image.fromarray(np.dstack([astro, alpha]), "RGBA").save(folder / "rgba.png")
    gray = np.asarray(Image.fromarray(astro).convert("L"))
    Image.fromarray(gray.astype(np.uint16) * 257).save(folder / "gray16.png")
    info = media.ImageInfo(None, "PNG", "RGB", (512, 512), bits=16)
    (folder / "rgb16.png").write_bytes(media._write_png16(astro.astype(np.uint16) * 257, info, 1))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: viewers (and starcli) turn it upright
    Image.fromarray(np.ascontiguousarray(np.rot90(astro, 1))).save(folder / "rotated.jpg", quality=92, exif=exif.tobytes())
    Image.fromarray(gray, "L").save(folder / "gray.jpg", quality=92)


@pytest.fixture(scope="module")
def translated(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("e2e")
    _make_inputs(root / "in")
    result = run("translate", root / "in", "--set", "hair=black", "--set", "male", "-o", root / "out",
                 "--model", tiny_model_dir, "--report", root / "report.json", "--batch-size", "4")
    report = json.loads((root / "report.json").read_text())
    return root, result, report


def _entry(report, name):
    return next(f for f in report["files"] if f["input"].endswith(name))


def _outside_crops(report_entry, shape, crop_size=32) -> np.ndarray:
    """Boolean mask of frame pixels outside every face's crop square."""
    h, w = shape[:2]
    ys, xs = np.mgrid[0:h, 0:w]
    pts = np.stack([xs.ravel(), ys.ravel(), np.ones(h * w)], 0)
    outside = np.ones(h * w, bool)
    for face in report_entry["faces"]:
        q = np.asarray(face["transform"]) @ pts
        inside = (q[0] > -1.5) & (q[0] < crop_size + 0.5) & (q[1] > -1.5) & (q[1] < crop_size + 0.5)
        outside &= ~inside
    return outside.reshape(h, w)


def test_run_succeeds_and_mirrors_the_tree(translated):
    root, result, report = translated
    assert result.exit_code == 0, result.output
    assert "faces/s" in result.output and "photos/s" in result.output
    outs = sorted(str(p.relative_to(root / "out")) for p in (root / "out").rglob("*") if p.is_file())
    ins = sorted(str(p.relative_to(root / "in")) for p in (root / "in").rglob("*") if p.is_file())
    assert outs == ins
    assert report["summary"]["failed"] == 0 and report["summary"]["done"] == len(ins)
    assert report["edits"] == ["hair=black,male"]
    assert len(_entry(report, "fairface_0020.jpg")["faces"]) == 2


@pytest.mark.parametrize("name", ["astronaut.png", "grace_hopper.jpg", "people/fairface_0001.jpg", "rgba.png",
                                  "gray16.png", "rgb16.png", "rotated.jpg", "gray.jpg"])
def test_output_has_input_size_format_and_changed_face(translated, name):
    root, _, report = translated
    src, out = Image.open(root / "in" / name), Image.open(root / "out" / name)
    assert out.format == src.format
    entry = _entry(report, name)
    assert entry["status"] == "done" and len(entry["faces"]) >= 1
    a = media.decode_image(root / "in" / name).pixels.astype(np.float64)
    b = media.decode_image(root / "out" / name).pixels.astype(np.float64)
    assert a.shape == b.shape
    scale = 65535.0 if name in ("gray16.png", "rgb16.png") else 255.0
    x0, y0, x1, y1 = (int(v) for v in entry["faces"][0]["box"])
    inner = (slice(y0 + (y1 - y0) // 4, y1 - (y1 - y0) // 4), slice(x0 + (x1 - x0) // 4, x1 - (x1 - x0) // 4))
    assert np.abs(a[inner] - b[inner]).mean() / scale > 0.02  # the random model changed the face
    outside = _outside_crops(entry, a.shape)
    assert outside.mean() > 0.3
    if src.format == "PNG":  # lossless: pixels outside the face regions are bit-identical
        assert np.array_equal(a[outside], b[outside])
    else:
        assert np.abs(a[outside] - b[outside]).mean() < 1.5


def test_faces_are_aligned_to_the_template(translated):
    root, _, report = translated
    from starcli.spec import CELEBA_POINTS

    for name in ("astronaut.png", "grace_hopper.jpg", "people/fairface_0001.jpg", "rotated.jpg"):
        face = _entry(report, name)["faces"][0]
        M = np.asarray(face["transform"])
        for point in ("left_eye", "right_eye"):
            x, y = face["landmarks"][point]
            q = M @ np.array([x, y, 1.0])
            u, v = CELEBA_POINTS[point]
            # within 5% of the crop side (6 px at 128 px)
            assert np.hypot(q[0] - (u * 32 - 0.5), q[1] - (v * 32 - 0.5)) < 0.05 * 32, (name, point)


def test_alpha_depth_orientation_grayscale_kept(translated):
    root, _, _ = translated
    out = Image.open(root / "out" / "rgba.png")
    assert out.mode == "RGBA"
    assert np.array_equal(np.asarray(out)[..., 3], np.asarray(Image.open(root / "in" / "rgba.png"))[..., 3])
    assert Image.open(root / "out" / "gray16.png").mode.startswith("I;16")
    assert (root / "out" / "rgb16.png").read_bytes()[24] == 16
    rot = Image.open(root / "out" / "rotated.jpg")
    assert rot.size == (512, 512) and rot.getexif().get(0x0112, 1) == 1
    assert Image.open(root / "out" / "gray.jpg").mode == "L"


def test_rerun_skips_existing_and_overwrite_replaces(translated, tiny_model_dir):
    root, _, _ = translated
    before = (root / "out" / "astronaut.png").stat().st_mtime_ns
    result = run("translate", root / "in" / "astronaut.png", "--set", "male", "-o", root / "out", "--model", tiny_model_dir)
    assert result.exit_code == 0 and (root / "out" / "astronaut.png").stat().st_mtime_ns == before
    assert "skipped" in result.output
    result = run("translate", root / "in" / "astronaut.png", "--set", "male", "-o", root / "out", "--model", tiny_model_dir, "--overwrite")
    assert result.exit_code == 0 and (root / "out" / "astronaut.png").stat().st_mtime_ns != before


def test_identity_backend_reproduces_the_input(tmp_path, tiny_model_dir, test_plugins):
    result = run("translate", DATA / "astronaut.png", DATA / "fairface_0020.jpg", "--set", "male", "-o", tmp_path,
                 "--model", tiny_model_dir, "--backend", "identity")
    assert result.exit_code == 0, result.output
    a = np.asarray(Image.open(DATA / "astronaut.png").convert("RGB")).astype(int)
    b = np.asarray(Image.open(tmp_path / "astronaut.png").convert("RGB")).astype(int)
    assert np.abs(a - b).max() <= 1  # within 1/255 everywhere (colour match + rounding)


def test_strength_zero_keeps_the_photo_and_out_of_range_is_a_usage_error(tmp_path, tiny_model_dir):
    result = run("translate", DATA / "astronaut.png", "--set", "male", "-o", tmp_path, "--model", tiny_model_dir, "--strength", "0")
    assert result.exit_code == 0, result.output
    a = np.asarray(Image.open(DATA / "astronaut.png").convert("RGB")).astype(int)
    b = np.asarray(Image.open(tmp_path / "astronaut.png").convert("RGB")).astype(int)
    assert np.abs(a - b).max() <= 1  # the random model's edit scaled to nothing
    result = run("translate", DATA / "astronaut.png", "--set", "male", "-o", tmp_path / "o", "--model", tiny_model_dir, "--strength", "9")
    assert result.exit_code == 2 and "translate.strength" in result.output and not (tmp_path / "o").exists()


def test_grid_crops_edits_and_report(tmp_path, tiny_model_dir):
    result = run("translate", DATA / "grace_hopper.jpg", "--edit", "hair=blond", "--edit", "no-young,male",
                 "-o", tmp_path, "--model", tiny_model_dir, "--grid", "--crops", "--report", tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "hair-blond" / "grace_hopper.jpg").size == (512, 600)
    assert Image.open(tmp_path / "no-young+male" / "grace_hopper.jpg").size == (512, 600)
    grid = Image.open(tmp_path / "grace_hopper.grid.jpg")
    assert grid.format == "JPEG" and grid.size[0] > 3 * 436 and grid.size[1] == 512
    crops = sorted(p.name for p in (tmp_path / "grace_hopper.crops").iterdir())
    assert crops == ["face0.aligned.png", "face0.hair-blond.png", "face0.no-young+male.png"]
    report = json.loads((tmp_path / "r.json").read_text())
    entry = report["files"][0]
    assert report["edits"] == ["hair=blond", "no-young,male"]
    assert set(entry["faces"][0]) >= {"box", "landmarks", "transform", "source"}
    assert list(entry["edits"]) == ["hair=blond", "no-young,male"]
    assert {"decode", "detect", "align", "translate", "paste", "encode"} <= set(entry["timings"])


def test_aligned_inputs_and_dry_run(tmp_path, tiny_model_dir):
    result = run("translate", DATA / "fairface_0002.jpg", "--set", "male", "-o", tmp_path / "dry", "--model", tiny_model_dir, "--dry-run")
    assert result.exit_code == 0 and "translate" in result.output and "fairface_0002.jpg" in result.output
    assert not (tmp_path / "dry").exists()
    result = run("translate", DATA / "fairface_0002.jpg", "--set", "male", "-o", tmp_path / "al", "--model", tiny_model_dir, "--aligned")
    assert result.exit_code == 0, result.output
    a = np.asarray(Image.open(DATA / "fairface_0002.jpg")).astype(int)
    b = np.asarray(Image.open(tmp_path / "al" / "fairface_0002.jpg")).astype(int)
    assert a.shape == b.shape and np.abs(a - b).mean() > 2


def test_usage_errors_exit_2(tmp_path, tiny_model_dir):
    result = run("translate", DATA / "astronaut.png", "-o", tmp_path / "o", "--model", tiny_model_dir)
    assert result.exit_code == 2 and "nothing to change" in result.output
    result = run("translate", DATA / "astronaut.png", "--set", "male", "-o", tmp_path / "o", "--model", tiny_model_dir, "--no-face", "maybe")
    assert result.exit_code == 2 and "run.no_face" in result.output
    result = run("translate", DATA / "astronaut.png", "--set", "male")
    assert result.exit_code == 2
    assert not (tmp_path / "o").exists()


def test_missing_model_exit_1(tmp_path):
    result = run("translate", DATA / "astronaut.png", "--set", "male", "-o", tmp_path, "--model", "no-such-model")
    assert result.exit_code == 1 and "no-such-model" in result.output


def test_config_file_and_config_show(tmp_path, tiny_model_dir, monkeypatch):
    cfg = tmp_path / "starcli.toml"
    cfg.write_text(f'translate = {{ model = "{tiny_model_dir}", set = ["male"] }}\n[run]\nbatch_size = 3\n')
    monkeypatch.chdir(tmp_path)
    result = run("config", "show")
    assert result.exit_code == 0, result.output
    assert "run.batch_size" in result.output and "file:starcli.toml" in result.output
    result = run("translate", DATA / "astronaut.png", "-o", tmp_path / "o", "--batch-size", "2")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o" / "astronaut.png").is_file()
    cfg.write_text("[run]\nbatch_sise = 3\n")
    result = run("config", "show")
    assert result.exit_code == 2 and "run.batch_sise" in result.output
