"""starcli.evaluate on a tiny synth dataset (mask judge) and a tiny trained model."""

from __future__ import annotations

import json

import pytest

from starcli.errors import InputError
from starcli.evaluate import edits_for, evaluate_model
from starcli.train import load_train_config, train

synth = pytest.importorskip("starcli.synth")


@pytest.fixture(scope="module")
def synth_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    data = root / "synth"
    synth.generate_dataset(data, 30, seed=5, size=16, pairs=True, workers=0)
    cfg = load_train_config(overrides={
        "data.path": str(data), "data.image_size": 16, "data.workers": 1,
        "model.g_conv_dim": 8, "model.g_repeat_num": 1, "model.d_conv_dim": 8, "model.d_repeat_num": 2,
        "optim.iters": 2, "optim.n_critic": 1, "run.batch_size": 4, "run.threads": 1, "run.out": str(root / "run"),
        "loss.lambda_pair": 10.0, "log.sample_count": 0,
    })
    train(cfg)
    return root / "run", data


def test_edits_for():
    assert edits_for(["A", "B", "C"], [["A", "B"]]) == [("A", "set"), ("B", "set"), ("C", "flip")]


def test_eval_with_synth_masks(synth_run, tmp_path):
    run, data = synth_run
    report = evaluate_model(run, data, batch_size=4)
    assert report.judge == "masks" and report.num_images == 30
    attrs = [r.attribute for r in report.rows]
    assert attrs[-4:] == ["Eyeglasses", "Smiling", "Beard", "Young"]
    for r in report.rows:
        assert 0.0 <= r.success <= 1.0 and r.rec_l1 >= 0.0
        assert r.outside_change is not None and 0.0 <= r.outside_change <= 1.0
        assert r.count == (30 if r.target == "flip" else r.count)
        if r.target == "flip":  # the overall rate lies between the adding and the removing rates
            assert min(r.success_on, r.success_off) - 1e-9 <= r.success <= max(r.success_on, r.success_off) + 1e-9
        else:
            assert r.success_on is None and r.success_off is None
    out = tmp_path / "r.json"
    report.write_json(out)
    d = json.loads(out.read_text())
    assert "mean_outside_change" in d["summary"]


def test_eval_splits_flips_into_adding_and_removing(synth_run, monkeypatch, tmp_path):
    """A judge that always sees Young and Eyeglasses and never the other binary attributes: flips
    that add those succeed and removals fail, the reverse for the others, so ``success_on`` /
    ``success_off`` are exactly 1 / 0 (or 0 / 1) over ``n_on`` / ``n_off`` faces = the dataset's
    faces without / with the attribute."""
    import numpy as np

    from starcli.data import load_dataset

    run, data = synth_run
    present = {"Young", "Eyeglasses"}
    monkeypatch.setattr(synth, "measure_attributes", lambda images, masks: {a: np.full(len(images), int(a in present)) for a in synth.ATTRIBUTES})
    report = evaluate_model(run, data, batch_size=4)
    flips = [r for r in report.rows if r.target == "flip"]
    labels = load_dataset(data, attrs=[r.attribute for r in flips], use_pairs=False, require_classes=False).labels
    assert {r.attribute for r in flips} >= present | {"Smiling", "Beard"}
    for k, r in enumerate(flips):
        has = int(labels[:, k].sum())
        assert 0 < has < 30 and (r.n_on, r.n_off) == (30 - has, has)
        adds_succeed = r.attribute in present
        assert (r.success_on, r.success_off) == ((1.0, 0.0) if adds_succeed else (0.0, 1.0))
        assert r.success == (r.n_on if adds_succeed else r.n_off) / 30
    assert any(r.n_on != r.n_off for r in flips)
    assert all(r.n_on is None and r.n_off is None for r in report.rows if r.target == "set")
    out = tmp_path / "r.json"
    report.write_json(out)
    rows = {r["attribute"]: r for r in json.loads(out.read_text())["rows"]}
    assert all((rows[r.attribute]["n_on"], rows[r.attribute]["n_off"]) == (r.n_on, r.n_off) for r in flips)


def test_score_progress_measures_how_far_edits_move_the_judges_score(synth_run):
    """Faces without the attribute score -2, faces with it +2. Edits that land every face at -1
    move the adding edits a quarter of the way (0.25) and the removing ones three quarters (0.75)."""
    import numpy as np

    from starcli.evaluate import _score_progress

    src = np.array([-2.0, -2.0, 2.0, 2.0, 2.0])
    target = np.array([1, 1, 0, 0, 0])  # the first two are edited to have it, the rest to lose it
    assert _score_progress(src, np.full(5, -1.0), target) == {1: 0.25, 0: 0.75}
    assert _score_progress(src, src, target) == {1: 0.0, 0: 0.0}
    assert _score_progress(src[:2], src[:2], target[:2]) == {1: None, 0: None}  # no face has it yet
    run, data = synth_run
    report = evaluate_model(run, data, batch_size=4)
    for r in report.rows:
        if r.target == "flip":  # the real judge on a 2-step model: finite numbers for both directions
            assert np.isfinite(r.progress_on) and np.isfinite(r.progress_off)
        else:
            assert r.progress_on is None and r.progress_off is None


def test_eval_of_chosen_edits_matches_the_full_eval(synth_run):
    """``edits=`` measures only the named edits, in the model's order, with the same numbers as
    the full evaluation; an unknown name is an error that names it."""
    run, data = synth_run
    full = {r.attribute: r for r in evaluate_model(run, data, batch_size=4).rows}
    some = evaluate_model(run, data, batch_size=4, edits=["Young", "Blond_Hair"])
    assert [r.attribute for r in some.rows] == ["Blond_Hair", "Young"]
    for r in some.rows:
        assert (r.success, r.outside_change, r.rec_l1, r.progress_off) == pytest.approx(
            (full[r.attribute].success, full[r.attribute].outside_change, full[r.attribute].rec_l1, full[r.attribute].progress_off))
    assert set(some.summary()) == {"Blond_Hair", "Young", "mean_outside_change", "mean_rec_l1"}
    with pytest.raises(InputError, match="Old"):
        evaluate_model(run, data, edits=["Old"])


def test_eval_discriminator_judge_and_limit(synth_run):
    run, data = synth_run
    report = evaluate_model(run, data, judge="discriminator", limit=3, precision="bf16")
    assert report.judge == "discriminator" and report.num_images == 3
    assert all(r.outside_change is None and r.progress_on is None for r in report.rows)


def test_eval_masks_missing(synth_run, tmp_path):
    run, _ = synth_run
    from tests.test_data import make_csv_dataset

    data = make_csv_dataset(tmp_path / "plain", n=4, size=16, pairs=False)
    with pytest.raises(InputError):
        evaluate_model(run, data, judge="masks")
