"""`starcli models ...` and `starcli --version` through the CLI and the installed script."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from starcli import models
from starcli.cli import app
from tests.test_models import ATTRS, _archive_bytes, _official_pair, _Server

ENV = {"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("STARCLI_HOME", str(tmp_path / "home"))


def run(*args: str):
    return CliRunner().invoke(app, list(args), env=ENV)


def test_import_list_info_export_remove(tmp_path):
    g_path = _official_pair(tmp_path / "ckpt")
    result = run("models", "import", str(g_path), "--attrs", ",".join(ATTRS), "--name", "tiny")
    assert result.exit_code == 0, result.output
    assert "imported" in result.output
    result = run("models", "list")
    assert result.exit_code == 0 and "tiny" in result.output and "installed" in result.output
    assert "celeba-128" in result.output and "registry" in result.output
    result = run("models", "info", "tiny")
    assert result.exit_code == 0 and "Black_Hair, Blond_Hair, Brown_Hair, Male, Young" in result.output
    assert "Black_Hair | Blond_Hair | Brown_Hair" in result.output
    result = run("models", "import", str(g_path), "--attrs", ",".join(ATTRS), "--name", "tiny")
    assert result.exit_code == 1 and "already exists" in result.output
    result = run("models", "export", "tiny", str(tmp_path / "out"), "--official")
    assert result.exit_code == 0 and (tmp_path / "out" / "tiny-G.ckpt").is_file()
    assert run("models", "remove", "tiny").exit_code == 0
    assert "tiny" not in run("models", "list").output


def test_bad_checkpoint_import_is_one_line_exit_1(tmp_path):
    bad = tmp_path / "x-G.ckpt"
    bad.write_text("not a checkpoint")
    result = run("models", "import", str(bad), "--attrs", ",".join(ATTRS), "--name", "x")
    assert result.exit_code == 1
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and str(bad) in lines[0]


def test_missing_model_exit_1_and_bad_flag_exit_2():
    result = run("models", "info", "does-not-exist")
    assert result.exit_code == 1 and "unknown model 'does-not-exist'" in result.output
    assert run("models", "list", "--bogus").exit_code == 2


def test_pull_through_cli_with_progress(tmp_path):
    body = _archive_bytes(tmp_path)
    with _Server({"/a.zip": (body, len(body))}) as server:
        result = run("models", "pull", "celeba-128", "--url", server.url + "/a.zip")
    assert result.exit_code == 0, result.output
    assert "installed 'celeba-128'" in result.output
    assert models.load("celeba-128").spec.image_size == 128


def test_installed_console_script(tmp_path):
    script = shutil.which("starcli") or os.path.join(os.path.dirname(sys.executable), "starcli")
    env = {**os.environ, **ENV, "STARCLI_HOME": str(tmp_path / "home")}
    version = subprocess.run([script, "--version"], capture_output=True, text=True, env=env, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("starcli ")
    listing = subprocess.run([script, "plugins"], capture_output=True, text=True, env=env, timeout=60)
    assert listing.returncode == 0 and "cpu" in listing.stdout and "dlib" in listing.stdout
    g_path = _official_pair(tmp_path / "ckpt")
    imported = subprocess.run([script, "models", "import", str(g_path), "--attrs", ",".join(ATTRS), "--name", "t"], capture_output=True, text=True, env=env, timeout=60)
    assert imported.returncode == 0, imported.stderr
    info = subprocess.run([script, "models", "info", "t"], capture_output=True, text=True, env=env, timeout=60)
    assert info.returncode == 0 and "Male" in info.stdout
