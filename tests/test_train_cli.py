"""`starcli train` / `starcli eval` through a Typer app built in the test."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from starcli.cli.train_cmd import register
from tests.test_data import make_csv_dataset

TINY_TOML = """
[data]
image_size = 16
workers = 1
[model]
g_conv_dim = 8
g_repeat_num = 1
d_conv_dim = 8
d_repeat_num = 2
[optim]
n_critic = 2
decay_iters = 2
[loss]
lambda_pair = 10.0
[run]
threads = 1
precision = "fp32"
[log]
sample_count = 2
"""


@pytest.fixture()
def app() -> typer.Typer:
    a = typer.Typer()
    register(a)
    return a


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner(env={"COLUMNS": "120", "NO_COLOR": "1", "TERM": "dumb"})


def test_train_then_resume_then_eval(app, runner, tmp_path):
    data = make_csv_dataset(tmp_path / "ds", n=8, size=16)
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY_TOML)
    out = tmp_path / "run"
    r = runner.invoke(app, ["train", str(data), "-o", str(out), "--config", str(cfg), "--iters", "4",
                            "--batch-size", "4", "--seed", "3", "--save-every", "2"])
    assert r.exit_code == 0, r.output
    assert "training summary" in r.output and "0 -> 4 of 4" in r.output
    assert (out / "model.json").is_file() and (out / "checkpoints" / "step_0000004").is_dir()
    # resume with more iterations: config comes from the checkpoint, flags override
    r = runner.invoke(app, ["train", "--resume", str(out), "--iters", "6"])
    assert r.exit_code == 0, r.output
    assert "4 -> 6 of 6" in r.output
    assert "seed = 3" in (out / "config.toml").read_text()
    # eval with the model's discriminator as the judge
    report = tmp_path / "eval.json"
    r = runner.invoke(app, ["eval", str(out), str(data), "--json", str(report)])
    assert r.exit_code == 0, r.output
    rep = json.loads(report.read_text())
    assert rep["judge"] == "discriminator" and rep["num_images"] == 8
    assert [row["attribute"] for row in rep["rows"]] == ["Black_Hair", "Blond_Hair", "Brown_Hair", "Smiling"]
    # --attrs: only the named edits; an unknown name fails with a one-line error
    r = runner.invoke(app, ["eval", str(out), str(data), "--attrs", "Smiling, Blond_Hair", "--json", str(report)])
    assert r.exit_code == 0, r.output
    assert [row["attribute"] for row in json.loads(report.read_text())["rows"]] == ["Blond_Hair", "Smiling"]
    r = runner.invoke(app, ["eval", str(out), str(data), "--attrs", "Young"])
    assert r.exit_code == 1 and "--attrs: Young not among" in r.output


def test_bad_flag_and_errors(app, runner, tmp_path):
    r = runner.invoke(app, ["train", "--no-such-flag"])
    assert r.exit_code == 2
    r = runner.invoke(app, ["train", str(tmp_path / "missing"), "-o", str(tmp_path / "o"), "--iters", "1"])
    assert r.exit_code == 1
    assert "dataset not found" in r.output
    bad = tmp_path / "bad.toml"
    bad.write_text("[optim]\nlr = 1\n")
    r = runner.invoke(app, ["train", str(tmp_path), "--config", str(bad)])
    assert r.exit_code == 1 and "unknown config key 'optim.lr'" in r.output
    r = runner.invoke(app, ["train", "--iters", "1"])
    assert r.exit_code == 1 and "data.path" in r.output


def test_trained_run_translates_through_the_cli(runner, tmp_path):
    """The run folder is a model: `starcli translate --model RUN --aligned` uses it."""
    from starcli.cli import app as starcli_app

    data = make_csv_dataset(tmp_path / "ds", n=8, size=16)
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY_TOML)
    run = tmp_path / "run"
    r = runner.invoke(starcli_app, ["train", str(data), "-o", str(run), "--config", str(cfg), "--iters", "2", "--batch-size", "4"])
    assert r.exit_code == 0, r.output
    photo = data / "images" / "000000.png"
    out = tmp_path / "out"
    r = runner.invoke(starcli_app, ["translate", str(photo), "--model", str(run), "--aligned", "--set", "hair=blond",
                                    "--source", "hair=black", "-o", str(out)])
    assert r.exit_code == 0, r.output
    written = [p for p in out.rglob("*.png")]
    assert written, r.output
