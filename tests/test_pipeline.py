"""pipeline: planning, the frame-batch API, the overlapped runner, config precedence."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from starcli.config import load_config
from starcli.errors import ConfigError
from starcli.pipeline import Pipeline, plan_inputs, process_paths

DATA = Path(__file__).parent / "data"


def _cfg(tiny_model_dir, **overrides):
    base = {"translate.model": str(tiny_model_dir), "translate.set": ["hair=black"], "translate.backend": "cpu"}
    base.update(overrides)
    return load_config(None, base, search_cwd=False)


def test_plan_mirrors_folders_globs_and_decides_skips(tmp_path):
    src = tmp_path / "in"
    (src / "a" / "b").mkdir(parents=True)
    for rel in ("x.jpg", "a/y.png", "a/b/z.webp", "a/notes.txt", "a/clip.mp4", ".hidden/h.png"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(b"x")
    out = tmp_path / "out"
    (out / "a").mkdir(parents=True)
    (out / "a" / "y.png").write_bytes(b"old")
    cfg = load_config(None, search_cwd=False)
    items = plan_inputs([src, str(tmp_path / "in" / "a" / "*.png"), tmp_path / "nope.jpg"], out, cfg, ["hair=black"])
    got = {(str(i.rel), i.kind, i.status) for i in items}
    assert ("x.jpg", "photo", "todo") in got and ("a/b/z.webp", "photo", "todo") in got
    assert ("a/clip.mp4", "video", "todo") in got
    assert ("a/y.png", "photo", "skipped") in got  # output exists: a re-run resumes
    assert not any("notes" in str(i.rel) or "hidden" in str(i.src) for i in items)
    # the glob's y.png maps to out/y.png (relative to the glob's base folder)
    assert any(i.outputs == [out / "y.png"] and i.status == "todo" for i in items)
    assert items[-1].status == "failed" and "no such file" in items[-1].reason
    over = plan_inputs([src], out, load_config(None, {"run.overwrite": True}, search_cwd=False))
    assert all(i.status == "todo" for i in over)
    multi = plan_inputs([src / "x.jpg"], out, cfg, ["hair=black", "male"])
    assert multi[0].outputs == [out / "hair-black" / "x.jpg", out / "male" / "x.jpg"]


def test_outputs_inside_an_input_folder_are_not_inputs(tmp_path):
    (tmp_path / "p.jpg").write_bytes(b"x")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "p.jpg").write_bytes(b"x")
    items = plan_inputs([tmp_path], tmp_path / "out", load_config(None, search_cwd=False))
    assert [str(i.rel) for i in items] == ["p.jpg"]


def test_process_frames_identity_is_exact(tiny_model_dir, test_plugins):
    cfg = _cfg(tiny_model_dir, **{"translate.backend": "identity", "detect.detector": "fake"})
    pipe = Pipeline(cfg)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (96, 80, 3), dtype=np.uint8), rng.integers(0, 65536, (64, 64, 3)).astype(np.uint16)]
    out = pipe.process_frames(frames)
    assert len(out) == 1 and [f.dtype for f in out[0]] == [np.uint8, np.uint16]
    for a, b in zip(frames, out[0]):
        assert a.shape == b.shape
        scale = 255 if a.dtype == np.uint8 else 65535
        assert np.abs(a.astype(np.int64) - b.astype(np.int64)).max() <= scale / 255.0


def test_process_frames_with_given_faces_and_several_edits(tiny_model_dir, test_plugins):
    cfg = _cfg(tiny_model_dir, **{"translate.set": [], "translate.edits": ["hair=blond", "hair=black"], "detect.detector": "fake"})
    pipe = Pipeline(cfg)
    frame = np.asarray(Image.open(DATA / "astronaut.png").convert("RGB"))
    faces = pipe.detect([frame])
    out = pipe.process_frames([frame, frame], faces=[faces[0], []])
    assert len(out) == 2 and all(len(per_edit) == 2 for per_edit in out)
    assert not np.array_equal(out[0][0], frame) and not np.array_equal(out[0][0], out[1][0])
    assert np.array_equal(out[0][1], frame)  # no face: untouched


def test_alignment_puts_landmarks_on_the_template(tiny_model_dir):
    from starcli.align import CELEBA_TEMPLATE, estimate_transforms, face_points

    pipe = Pipeline(_cfg(tiny_model_dir))
    frames = [np.asarray(Image.open(DATA / n).convert("RGB")) for n in ("astronaut.png", "grace_hopper.jpg", "fairface_0001.jpg")]
    faces = pipe.detect(frames)
    assert [len(f) for f in faces] == [1, 1, 1]
    pts, tpl = face_points([f[0] for f in faces], CELEBA_TEMPLATE)
    M = estimate_transforms(pts, tpl, 128)
    q = torch.einsum("nij,nkj->nki", M[:, :, :2], pts) + M[:, None, :, 2]
    err = (q - (tpl * 128 - 0.5)).norm(dim=-1)
    assert float(err.max()) < 4.0  # pixels at 128 px


def test_overlapped_run_batches_and_reports(tmp_path, tiny_model_dir):
    src = tmp_path / "in"
    src.mkdir()
    names = ["fairface_0001.jpg", "fairface_0002.jpg", "fairface_0006.jpg", "fairface_0020.jpg", "astronaut.png"]
    for n in names:
        shutil.copy(DATA / n, src / n)
    events = []
    cfg = _cfg(tiny_model_dir, **{"run.batch_size": 2, "run.workers": 2, "run.queue_size": 2, "run.report": str(tmp_path / "r.json")})
    report = process_paths([src], tmp_path / "out", cfg, on_event=events.append)
    assert report.failed == 0 and report.done == 5 and report.faces == 6
    assert report.batches >= 3  # 6 faces, at most ~2 per generator call
    assert [Path(f.input).name for f in report.files] == sorted(names)  # input order kept
    assert events[0].kind == "plan" and events[0].total == 5
    assert sum(1 for e in events if e.kind == "file") == 5
    assert {"decode", "detect", "align", "translate", "paste", "encode", "write"} <= set(report.stage_seconds)
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["summary"]["faces"] == 6 and data["summary"]["photos_per_second"] > 0


def test_videos_are_skipped_until_supported(tmp_path, tiny_model_dir, monkeypatch):
    import starcli.pipeline as pl

    (tmp_path / "clip.mp4").write_bytes(b"not really")
    monkeypatch.setattr(pl.importlib, "import_module", lambda name: (_ for _ in ()).throw(ImportError(name)))
    report = process_paths([tmp_path / "clip.mp4"], tmp_path / "out", _cfg(tiny_model_dir))
    assert report.files[0].status == "skipped" and report.files[0].reason == "video not supported yet"


def test_config_precedence_and_errors(tmp_path, monkeypatch):
    (tmp_path / "starcli.toml").write_text('run = { batch_size = 4, workers = 3 }\n[detect]\nupsample = 1\n')
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, {"run.batch_size": 2, "detect.largest_only": None})
    assert (cfg.run.batch_size, cfg.run.workers, cfg.detect.upsample, cfg.detect.largest_only) == (2, 3, 1, False)
    assert cfg.sources["run.batch_size"] == "cli" and cfg.sources["run.workers"] == "file:starcli.toml"
    assert cfg.sources["detect.largest_only"] == "default"
    for text, key in (("[run]\nbatch_size = 'big'\n", "run.batch_size"), ("[detekt]\nx = 1\n", "detekt.x"),
                      ("[run]\nno_face = 'maybe'\n", "run.no_face"), ("[translate]\nset = 3\n", "translate.set")):
        (tmp_path / "bad.toml").write_text(text)
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_config(tmp_path / "bad.toml")


def test_every_config_key_is_documented():
    from dataclasses import fields

    from starcli.config import SECTIONS

    text = (Path(__file__).parents[1] / "docs" / "config.md").read_text()
    keys = [f"{sec}.{f.name}" for sec, make in SECTIONS.items() for f in fields(make())]
    assert len(keys) > 40 and [k for k in keys if f"`{k}`" not in text] == []


def test_interrupt_stops_cleanly_without_partial_files(tmp_path, tiny_model_dir):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(6):
        shutil.copy(DATA / "fairface_0002.jpg", src / f"p{i}.jpg")

    def on_event(ev):
        if ev.kind == "batch":
            raise KeyboardInterrupt

    cfg = _cfg(tiny_model_dir, **{"run.batch_size": 1, "run.queue_size": 2})
    with pytest.raises(KeyboardInterrupt):
        process_paths([src], tmp_path / "out", cfg, on_event=on_event)
    left = [p.name for p in (tmp_path / "out").rglob("*")] if (tmp_path / "out").exists() else []
    assert all(n.endswith(".jpg") and ".tmp-" not in n for n in left)
    for name in left:
        assert Image.open(tmp_path / "out" / name).size == (448, 448)  # complete files only


def test_sources_estimated_ahead_match_the_translator(tiny_model_dir, test_plugins):
    from starcli.pipeline import FrameJob

    pipe = Pipeline(_cfg(tiny_model_dir, **{"detect.detector": "fake"}))
    frames = [np.asarray(Image.open(DATA / n).convert("RGB")) for n in ("astronaut.png", "fairface_0020.jpg")]
    faces = pipe.detect(frames)
    faces[1] = faces[1] * 2  # two faces in the second frame
    ahead = [FrameJob(pixels=f, faces=fs) for f, fs in zip(frames, faces)]
    inline = [FrameJob(pixels=f, faces=fs) for f, fs in zip(frames, faces)]
    pipe.align(ahead)
    pipe.align(inline)
    pipe.estimate_sources(ahead)
    assert [len(j.source) for j in ahead] == [1, 2]
    before = pipe.critic_seconds
    pipe.translate(ahead)
    assert pipe.critic_seconds == before  # the translator used the labels estimated ahead
    pipe.translate(inline)
    assert pipe.critic_seconds > before
    for a, b in zip(ahead, inline):
        assert torch.equal(a.source, b.source)
        torch.testing.assert_close(a.outputs[0], b.outputs[0])


def test_partial_batches_are_padded_to_few_shapes(tiny_model_dir, test_plugins):
    from starcli.pipeline import FrameJob

    pipe = Pipeline(_cfg(tiny_model_dir, **{"detect.detector": "fake", "translate.backend": "identity", "run.batch_size": 8}))
    shapes = []
    real = pipe.backend.translate
    pipe.backend.translate = lambda crops, labels: shapes.append(len(crops)) or real(crops, labels)
    frame = np.asarray(Image.open(DATA / "fairface_0002.jpg").convert("RGB"))
    face = pipe.detect([frame])[0]
    for n in (1, 3, 5, 8):
        jobs = [FrameJob(pixels=frame, faces=face * n)]
        pipe.align(jobs)
        assert pipe.translate(jobs) == n and len(jobs[0].outputs[0]) == n and len(jobs[0].source) == n
    assert shapes == [1, 4, 8, 8]
