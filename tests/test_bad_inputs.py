"""Bad inputs: one line naming the file and the reason, the run goes on, non-zero exit, nothing partial."""

from __future__ import annotations

import os
import shutil
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from starcli.cli import app

DATA = Path(__file__).parent / "data"
ENV = {"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}


def run(*args):
    argv = [str(a) for a in args] + ["--backend", "cpu"]
    return CliRunner().invoke(app, argv, env=ENV)


def _error_lines(output: str) -> list[str]:
    return [ln for ln in output.splitlines() if ln.startswith("error:")]


def _all_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_bad_files_fail_one_line_each_and_the_run_goes_on(tmp_path, tiny_model_dir):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(DATA / "astronaut.png", src / "good.png")
    (src / "empty.jpg").write_bytes(b"")
    (src / "truncated.jpg").write_bytes((DATA / "grace_hopper.jpg").read_bytes()[:15000])
    (src / "corrupt.png").write_bytes((DATA / "astronaut.png").read_bytes()[:64] + b"\0" * 4000)
    (src / "notes.png").write_text("this is text, not an image\n" * 10)
    Image.new("RGB", (300, 200), (90, 140, 200)).save(src / "noface.png")
    out = tmp_path / "out"
    result = run("translate", src, "--set", "hair=black", "-o", out, "--model", tiny_model_dir)
    assert result.exit_code == 1, result.output
    errors = _error_lines(result.output)
    expected = {"empty.jpg": "empty file", "truncated.jpg": "truncated", "corrupt.png": "corrupt",
                "notes.png": "not an image", "noface.png": "no face found"}
    assert len(errors) == len(expected), errors
    for name, reason in expected.items():
        line = next(ln for ln in errors if name in ln)
        assert reason in line, line
    assert "failed" in result.output and "5" in result.output  # summary table
    assert _all_files(out) == ["good.png"]  # nothing partial, no temp files


def test_no_face_policies(tmp_path, tiny_model_dir):
    Image.new("RGB", (120, 90), (10, 200, 30)).save(tmp_path / "wall.jpg")
    result = run("translate", tmp_path / "wall.jpg", "--set", "male", "-o", tmp_path / "copy", "--model", tiny_model_dir, "--no-face", "copy")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "copy" / "wall.jpg").read_bytes() == (tmp_path / "wall.jpg").read_bytes()
    result = run("translate", tmp_path / "wall.jpg", "--set", "male", "-o", tmp_path / "skip", "--model", tiny_model_dir, "--no-face", "skip")
    assert result.exit_code == 0 and "no face found" in result.output and not (tmp_path / "skip" / "wall.jpg").exists()


def test_huge_image_decodes_and_bomb_is_refused(tmp_path, tiny_model_dir):
    # 12000x9000 solid 1-bit grayscale PNG, written by hand in milliseconds
    w, h = 12000, 9000
    body = zlib.compress((b"\x00" + b"\xaa" * (w // 8)) * h, 1)

    def chunk(t: bytes, b: bytes) -> bytes:
        return struct.pack(">I", len(b)) + t + b + struct.pack(">I", zlib.crc32(t + b))

    def png(width: int, height: int, data: bytes, depth: int = 1, colour: int = 0) -> bytes:
        ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
        return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b"")

    (tmp_path / "huge.png").write_bytes(png(w, h, body))
    (tmp_path / "bomb.png").write_bytes(png(40000, 40000, zlib.compress(b"", 1), 8, 2))
    t0 = time.perf_counter()
    result = run("translate", tmp_path / "huge.png", tmp_path / "bomb.png", "--set", "male", "-o", tmp_path / "out", "--model", tiny_model_dir)
    elapsed = time.perf_counter() - t0
    assert result.exit_code == 1
    errors = _error_lines(result.output)
    assert any("huge.png" in ln and "no face found" in ln for ln in errors), errors  # decoded fine, just no face
    assert any("bomb.png" in ln and "decompression bomb" in ln for ln in errors), errors
    assert elapsed < 20  # ~2 s on an idle 2-core machine
    assert _all_files(tmp_path / "out") == []


def test_unreadable_input(tmp_path, tiny_model_dir):
    locked = tmp_path / "locked.png"
    shutil.copy(DATA / "astronaut.png", locked)
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):
            pytest.skip("running as root: chmod 000 does not make the file unreadable")
        result = run("translate", locked, DATA / "fairface_0002.jpg", "--set", "male", "-o", tmp_path / "out", "--model", tiny_model_dir)
        assert result.exit_code == 1
        assert any("locked.png" in ln and "permission denied" in ln for ln in _error_lines(result.output))
        assert _all_files(tmp_path / "out") == ["fairface_0002.jpg"]
    finally:
        locked.chmod(0o644)


def test_unwritable_output_folder(tmp_path, tiny_model_dir):
    # a file where the output folder should be: fails for root too (chmod would not)
    blocker = tmp_path / "out"
    blocker.write_text("not a folder")
    result = run("translate", DATA / "astronaut.png", DATA / "fairface_0002.jpg", "--set", "male", "-o", blocker, "--model", tiny_model_dir)
    assert result.exit_code == 1
    errors = _error_lines(result.output)
    assert len(errors) == 2 and all("cannot" in ln for ln in errors), errors
    assert any("astronaut.png" in ln for ln in errors) and any("fairface_0002.jpg" in ln for ln in errors)
    assert blocker.read_text() == "not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("settings, reason", [
    (["--set", "hair=purple"], "unknown value 'purple' for hair"),
    (["--set", "wings"], "unknown attribute 'wings'"),
    (["--set", "hair=black", "--set", "hair=blond"], "conflicting settings"),
    (["--set", "male", "--set", "no-male"], "conflicting settings"),
])
def test_bad_attributes_fail_fast(tmp_path, tiny_model_dir, settings, reason):
    result = run("translate", DATA / "astronaut.png", *settings, "-o", tmp_path / "out", "--model", tiny_model_dir)
    assert result.exit_code == 2
    errors = _error_lines(result.output)
    assert len(errors) == 1 and reason in errors[0], result.output
    assert "black" in errors[0] and "blond" in errors[0]  # the valid choices are listed
    assert not (tmp_path / "out").exists()


def test_output_never_overwrites_input_and_missing_inputs(tmp_path, tiny_model_dir):
    shutil.copy(DATA / "astronaut.png", tmp_path / "a.png")
    before = (tmp_path / "a.png").read_bytes()
    result = run("translate", tmp_path / "a.png", tmp_path / "missing.jpg", "--set", "male", "-o", tmp_path, "--model", tiny_model_dir, "--overwrite")
    assert result.exit_code == 1
    errors = _error_lines(result.output)
    assert any("a.png" in ln and "overwrite the input" in ln for ln in errors), errors
    assert any("missing.jpg" in ln and "no such file" in ln for ln in errors), errors
    assert (tmp_path / "a.png").read_bytes() == before


def test_interrupted_run_leaves_no_partial_outputs(tmp_path, tiny_model_dir):
    out = tmp_path / "out"
    out.mkdir()
    stale = out / "astronaut.png.tmp-999999999-0"  # left by a killed run (that pid does not exist)
    stale.write_bytes(b"half")
    result = run("translate", DATA / "astronaut.png", "--set", "male", "-o", out, "--model", tiny_model_dir)
    assert result.exit_code == 0, result.output
    assert _all_files(out) == ["astronaut.png"]
    assert np.asarray(Image.open(out / "astronaut.png")).shape == (512, 512, 3)
