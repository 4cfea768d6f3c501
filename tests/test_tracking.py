"""Face tracks: one-euro smoothing, association, bridging, entering/leaving, scene cuts, jitter."""

from __future__ import annotations

import numpy as np
import pytest

from starcli.align import CELEBA_TEMPLATE, estimate_transforms, face_points, template_tensor
from starcli.detect import Face
from starcli.errors import ConfigError
from starcli.tracking import (
    FaceTracker,
    OneEuroFilter,
    SceneCutDetector,
    TrackerConfig,
    alignment_jitter,
    box_iou,
)

FPS = 25.0


def _face(cx: float, cy: float, size: float = 80.0, noise: float = 0.0, rng=None) -> Face:
    """A face centred at (cx, cy): eyes, nose and mouth at fixed fractions of ``size``."""
    rel = {"left_eye": (-0.2, -0.1), "right_eye": (0.2, -0.1), "nose": (0.0, 0.12), "mouth": (0.0, 0.25)}
    lms = {}
    for k, (u, v) in rel.items():
        dx, dy = (rng.normal(0, noise, 2) if rng is not None and noise > 0 else (0.0, 0.0))
        lms[k] = (cx + u * size + dx, cy + v * size + dy)
    box = (cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2)
    return Face(box, 1.0, lms, np.array(list(lms.values())))


def _frame(colour: tuple[int, int, int]) -> np.ndarray:
    img = np.zeros((120, 160, 3), np.uint8)
    img[:] = colour
    img[40:80, 60:100] = 255 - np.array(colour, np.uint8)
    return img


def test_one_euro_smooths_a_still_signal_and_follows_motion():
    # units of face size, as the tracker uses: 1 px of noise on a 100 px face
    rng = np.random.default_rng(0)
    f = OneEuroFilter(min_cutoff=0.5, beta=2.0)
    raw = rng.normal(0, 0.01, 200)
    out = np.array([f(np.array([x]), i / FPS)[0] for i, x in enumerate(raw)])
    assert np.std(np.diff(out[20:])) < 0.2 * np.std(np.diff(raw[20:]))
    # a fast move (half a face size per second): the cutoff opens and the lag stays small
    g = OneEuroFilter(min_cutoff=0.5, beta=2.0)
    ramp = [g(np.array([0.02 * i]), i / FPS)[0] for i in range(60)]
    assert abs(ramp[-1] - 0.02 * 59) < 0.1


def test_box_iou():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0


def test_moving_faces_keep_their_ids():
    tr = FaceTracker(TrackerConfig(), FPS)
    ids = []
    for i in range(30):
        a = _face(100 + 3 * i, 100)
        b = _face(400 - 3 * i, 120)
        ids.append([t.track_id for t in tr.update(i, [a, b])])
    assert all(x == [1, 2] for x in ids)


def test_single_missed_detection_is_bridged_with_a_prediction():
    tr = FaceTracker(TrackerConfig(max_missed=2), FPS)
    for i in range(10):
        tr.update(i, [_face(100 + 4 * i, 100)])
    bridged = tr.update(10, [])
    assert len(bridged) == 1 and bridged[0].bridged and bridged[0].detection is None
    cx = sum(bridged[0].face.box[::2]) / 2
    assert abs(cx - (100 + 4 * 10)) < 4  # extrapolated, not frozen at the last position
    back = tr.update(11, [_face(144, 100)])
    assert [t.track_id for t in back] == [1] and not back[0].bridged


def test_faces_entering_and_leaving():
    tr = FaceTracker(TrackerConfig(max_missed=1), FPS)
    assert [t.track_id for t in tr.update(0, [_face(100, 100)])] == [1]
    assert [t.track_id for t in tr.update(1, [_face(100, 100), _face(300, 100)])] == [1, 2]  # enters
    assert [t.track_id for t in tr.update(2, [_face(300, 100)])] == [1, 2]  # 1 bridged once
    assert [t.track_id for t in tr.update(3, [_face(300, 100)])] == [2]  # 1 has left
    assert [t.track_id for t in tr.update(4, [_face(100, 100), _face(300, 100)])] == [2, 3]  # a new track


def test_scene_cut_resets_tracks():
    tr = FaceTracker(TrackerConfig(scene_cut=0.35), FPS)
    for i in range(5):
        out = tr.update(i, [_face(80, 60, 40)], _frame((20, 40, 60)))
    assert [t.track_id for t in out] == [1]
    cut = tr.update(5, [_face(80, 60, 40)], _frame((200, 180, 30)))
    assert [t.track_id for t in cut] == [2] and tr.stats["scene_cuts"] == 1
    assert SceneCutDetector(0.35).update(_frame((1, 2, 3))) is False


def test_frames_without_detection_extrapolate_without_counting_misses():
    tr = FaceTracker(TrackerConfig(max_missed=0), FPS)
    tr.update(0, [_face(100, 100)])
    for i in range(1, 4):
        out = tr.update(i, None)
        assert len(out) == 1 and out[0].bridged
    assert [t.track_id for t in tr.update(4, [_face(100, 100)])] == [1]


def test_min_hits_hides_one_frame_false_positives():
    tr = FaceTracker(TrackerConfig(min_hits=2, max_missed=0), FPS)
    assert tr.update(0, [_face(100, 100)]) == []
    assert [t.track_id for t in tr.update(1, [_face(100, 100)])] == [1]


def _transforms(faces: list[Face]) -> list[np.ndarray]:
    pts, tpl = face_points(faces, CELEBA_TEMPLATE)
    return list(estimate_transforms(pts, tpl, 128).numpy())


def test_smoothing_reduces_alignment_jitter_on_a_still_face():
    rng = np.random.default_rng(1)
    raw = [_face(200, 150, 100, noise=1.0, rng=rng) for _ in range(100)]
    smooth = FaceTracker(TrackerConfig(smooth=True), FPS)
    plain = FaceTracker(TrackerConfig(smooth=False), FPS)
    s_faces = [smooth.update(i, [f])[0].face for i, f in enumerate(raw)]
    p_faces = [plain.update(i, [f])[0].face for i, f in enumerate(raw)]
    tpl = template_tensor(CELEBA_TEMPLATE, ["left_eye", "right_eye", "nose", "mouth"]).numpy()
    j_raw = alignment_jitter(_transforms(p_faces), tpl, 128)
    j_smooth = alignment_jitter(_transforms(s_faces), tpl, 128)
    assert j_raw > 0.5 and j_smooth < 0.35 * j_raw


def test_alignment_jitter_is_zero_for_a_constant_transform():
    m = np.array([[0.5, 0.0, 3.0], [0.0, 0.5, 4.0]])
    assert alignment_jitter([m, m, m], np.array([[0.4, 0.5], [0.6, 0.5]]), 128) == 0.0


def test_config_validation_names_the_key():
    with pytest.raises(ConfigError, match="video.beta"):
        TrackerConfig.from_config({"beta": -1.0})
    assert TrackerConfig.from_config({"beta": 1.0, "codec": "x"}).beta == 1.0  # other keys ignored


def test_scene_cut_between_two_real_shots(tmp_path):
    """A pan/zoom over astronaut.png cut to a pan over grace_hopper.jpg: one cut, none inside
    the shots (measured distances: <= 0.03 inside, 0.32 at the cut; default threshold 0.2)."""
    import imageio.v3 as iio

    from starcli import video as V

    data = __import__("pathlib").Path(__file__).parent / "data"
    frames = []
    for name in ("astronaut.png", "grace_hopper.jpg"):
        img = np.ascontiguousarray(iio.imread(data / name)[..., :3])
        clip = V.render_pan_clip(img, tmp_path / f"{name}.mp4", (160, 120), 0.6, 25, pan=0.3, zoom=(1.0, 1.5))
        frames += [f for b in V.read_frames(V.probe(clip)) for f in b]
    det = SceneCutDetector(TrackerConfig().scene_cut)
    cuts = [i for i, f in enumerate(frames) if det.update(f)]
    assert cuts == [15]
