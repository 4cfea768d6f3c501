"""Tests of starcli.detect on the real photos in tests/data (dlib HOG + 5-point landmarks)."""

from __future__ import annotations

import doctest
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import starcli.detect
from starcli.detect import Detector, DlibDetector, Face, check_images, downscale_for_detection, finish_faces
from starcli.errors import ConfigError, InputError

DATA = Path(__file__).parent / "data"

pytestmark = pytest.mark.skipif(not DlibDetector.available()[0], reason="dlib or its landmark model missing")

# Eye centres and nose base measured once with dlib (upsample 0) and checked by eye.
ASTRONAUT = {"left_eye": (203.5, 102.0), "right_eye": (246.0, 104.5), "nose": (224.0, 135.0)}
GRACE = {"left_eye": (223.0, 193.5), "right_eye": (307.5, 190.5), "nose": (270.0, 252.0)}


def load(name: str) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(Image.open(DATA / name).convert("RGB")))


@pytest.fixture(scope="module")
def dlib0() -> DlibDetector:
    return DlibDetector()


def close(a, b, tol):
    return abs(a[0] - b[0]) <= tol and abs(a[1] - b[1]) <= tol


def test_doctests():
    assert doctest.testmod(starcli.detect).failed == 0


def test_protocol_and_availability():
    ok, why = DlibDetector.available()
    assert ok and why == ""
    det = DlibDetector.from_config({"detector": "dlib", "upsample": 1, "largest_only": True})
    assert isinstance(det, Detector)
    assert det.name == "dlib" and det.upsample == 1 and det.largest_only


@pytest.mark.parametrize("name,expected", [("astronaut.png", ASTRONAUT), ("grace_hopper.jpg", GRACE)])
def test_finds_the_face_with_plausible_landmarks(dlib0, name, expected):
    img = load(name)
    (faces,) = dlib0.detect([img])
    assert len(faces) == 1
    f = faces[0]
    x0, y0, x1, y1 = f.box
    assert isinstance(f, Face) and f.score > 0.5 and f.points.shape == (5, 2)
    for k, v in expected.items():
        assert close(f.landmarks[k], v, 3.0), (k, f.landmarks[k], v)
        assert x0 <= f.landmarks[k][0] <= x1 and y0 <= f.landmarks[k][1] <= y1
    le, re, nose = f.landmarks["left_eye"], f.landmarks["right_eye"], f.landmarks["nose"]
    iod = np.hypot(re[0] - le[0], re[1] - le[1])
    assert le[0] < nose[0] < re[0]
    assert 0.25 * f.width < iod < 0.7 * f.width
    assert 0.4 * iod < nose[1] - (le[1] + re[1]) / 2 < 1.2 * iod  # nose base below the eyes


def test_batched_and_deterministic(dlib0):
    imgs = [load("astronaut.png"), load("grace_hopper.jpg"), load("fairface_0020.jpg")]
    batch = dlib0.detect(imgs)
    again = dlib0.detect(imgs)
    single = [dlib0.detect([im])[0] for im in imgs]
    assert [len(fs) for fs in batch] == [1, 1, 2]
    for a, b, c in zip(batch, again, single):
        for fa, fb, fc in zip(a, b, c):
            assert fa.box == fb.box == fc.box and fa.landmarks == fb.landmarks == fc.landmarks


def test_sorted_by_size_and_options():
    img = load("fairface_0020.jpg")
    faces = DlibDetector().detect([img])[0]
    assert len(faces) == 2 and faces[0].size >= faces[1].size
    assert len(DlibDetector(largest_only=True).detect([img])[0]) == 1
    big = faces[0].size
    kept = DlibDetector(min_face_size=(faces[1].size + big) / 2).detect([img])[0]
    assert len(kept) == 1 and kept[0].box == faces[0].box


@pytest.mark.parametrize("name", ["fairface_0001.jpg", "fairface_0002.jpg", "fairface_0006.jpg",
                                  "fairface_0016.jpg", "fairface_0019.jpg"])
def test_fairface_single_faces(dlib0, name):
    faces = dlib0.detect([load(name)])[0]
    assert len(faces) == 1
    f = faces[0]
    assert f.landmarks["left_eye"][0] < f.landmarks["right_eye"][0]


def test_max_side_maps_back_to_full_resolution(dlib0):
    img = load("grace_hopper.jpg")  # 512x600 -> 256x300, face ~108 px
    small = DlibDetector(max_side=300).detect([img])[0]
    assert len(small) == 1
    for k, v in GRACE.items():
        assert close(small[0].landmarks[k], v, 4.0), (k, small[0].landmarks[k])
    ref = dlib0.detect([img])[0][0].box
    bx = small[0].box
    inter = max(0.0, min(bx[2], ref[2]) - max(bx[0], ref[0])) * max(0.0, min(bx[3], ref[3]) - max(bx[1], ref[1]))
    union = (bx[2] - bx[0]) * (bx[3] - bx[1]) + (ref[2] - ref[0]) * (ref[3] - ref[1]) - inter
    assert inter / union > 0.6  # HOG boxes are quantised by the pyramid level


@pytest.mark.parametrize("name,expected", [("astronaut.png", ASTRONAUT), ("grace_hopper.jpg", GRACE)])
def test_regions_around_a_known_face_find_it_as_the_full_frame_does(dlib0, name, expected):
    """Video between full detections: searching only around where a face is expected gives the
    same landmarks as a full-frame detection, also when the region is shrunk (landmarks are
    refined at full resolution), and a region without a face gives nothing."""
    from starcli.detect import detect_in_regions

    img = load(name)
    full = dlib0.detect([img])[0][0]
    moved = tuple(c + 6.0 for c in full.box)  # a track's prediction is a few pixels off
    for side in (0.0, 80.0):
        faces = detect_in_regions(dlib0, img, [moved, full.box], face_side=side)  # overlapping regions: one face
        assert len(faces) == 1, side
        for k, v in expected.items():
            assert close(faces[0].landmarks[k], full.landmarks[k], 1.0 if side == 0 else 2.0), (side, k)
    assert detect_in_regions(dlib0, img, [(0.0, img.shape[0] - 40.0, 40.0, img.shape[0])]) == []
    assert detect_in_regions(dlib0, img, []) == []


def test_shifted_face_moves_box_landmarks_and_points():
    f = Face((1.0, 2.0, 11.0, 12.0), 0.5, {"nose": (5.0, 6.0)}, np.array([[3.0, 4.0]]))
    g = f.shifted(10, -2)
    assert g.box == (11.0, 0.0, 21.0, 10.0) and g.landmarks["nose"] == (15.0, 4.0)
    assert g.points.tolist() == [[13.0, 2.0]] and g.score == 0.5


def test_downscale_and_scaled_face_round_trip():
    img = np.zeros((1000, 600, 3), np.uint8)
    small, sx, sy = downscale_for_detection(img, 500)
    assert small.shape[:2] == (500, 300) and sx == pytest.approx(0.5) and sy == pytest.approx(0.5)
    f = Face((10.0, 20.0, 30.0, 40.0), 1.0, {"nose": (19.5, 29.5)}, np.array([[19.5, 29.5]]))
    g = f.scaled(0.5, 0.5)
    assert g.box == (20.0, 40.0, 60.0, 80.0)
    assert g.landmarks["nose"] == (39.5, 59.5)  # (p + 0.5) / s - 0.5
    assert downscale_for_detection(img, None)[0] is img
    assert f.to_dict() == {"box": [10.0, 20.0, 30.0, 40.0], "score": 1.0, "landmarks": {"nose": [19.5, 29.5]}}


@pytest.mark.slow
def test_huge_photo_is_detected_in_bounded_time(dlib0):
    # 12000x9000 canvas holding astronaut upscaled 8x (face ~700 px wide)
    a = load("astronaut.png")
    big = np.empty((9000, 12000, 3), np.uint8)
    big[:] = a[0, 0]
    big[1000:5096, 3000:7096] = np.asarray(Image.fromarray(a).resize((4096, 4096), Image.NEAREST))
    t = time.perf_counter()
    faces = dlib0.detect([big])[0]
    elapsed = time.perf_counter() - t
    assert elapsed < 15.0  # ~1 s measured: one downscale pass + detection at <= 2048 px
    assert len(faces) >= 1
    for k, v in ASTRONAUT.items():
        x, y = faces[0].landmarks[k]
        # nearest 8x upscale: p_big = 8 * p + 3.5 (+ canvas offset)
        assert close(((x - 3000 - 3.5) / 8, (y - 1000 - 3.5) / 8), v, 2.0), (k, x, y)


def test_bad_images_and_options(dlib0):
    with pytest.raises(InputError, match="uint8"):
        dlib0.detect([np.zeros((10, 10, 3), np.float32)])
    with pytest.raises(InputError, match=r"\(H, W, 3\)"):
        dlib0.detect([np.zeros((10, 10), np.uint8)])
    with pytest.raises(InputError, match="list"):
        dlib0.detect(np.zeros((10, 10, 3), np.uint8))
    assert dlib0.detect([]) == []
    assert dlib0.detect([np.zeros((50, 70, 3), np.uint8)]) == [[]]
    assert dlib0.detect([np.zeros((1, 1, 3), np.uint8), np.full((30, 20, 3), 128, np.uint8)]) == [[], []]
    with pytest.raises(ConfigError, match="detect.upsampling"):
        DlibDetector.from_config({"upsampling": 1})
    with pytest.raises(ConfigError, match="detect.largest_only"):
        DlibDetector.from_config({"largest_only": "yes"})
    with pytest.raises(ConfigError, match="detect.upsample"):
        DlibDetector.from_config({"upsample": True})
    with pytest.raises(ConfigError, match="detect.upsample"):
        DlibDetector(upsample=7)
    assert check_images([np.zeros((3, 4, 3), np.uint8)])[0].shape == (3, 4, 3)


def test_finish_faces_orders_ties_by_position():
    z = np.zeros((0, 2))
    a = Face((50.0, 0.0, 60.0, 10.0), 1.0, {}, z)
    b = Face((0.0, 0.0, 10.0, 10.0), 2.0, {}, z)
    c = Face((0.0, 0.0, 30.0, 30.0), 0.1, {}, z)
    assert finish_faces([a, b, c]) == [c, b, a]
    assert finish_faces([a, b, c], min_face_size=20) == [c]


# ------------------------------------------------------------------------------------------------
# MTCNN plugin (plugins/starcli_mtcnn); imported from the source tree if not installed

try:
    import starcli_mtcnn.detector as mtcnn_mod
except ImportError:  # editable install made before the plugin existed
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))
    import starcli_mtcnn.detector as mtcnn_mod

needs_mtcnn = pytest.mark.skipif(not mtcnn_mod.MtcnnDetector.available()[0], reason=mtcnn_mod.INSTALL_HINT)


@pytest.fixture(scope="module")
def mtcnn():
    return mtcnn_mod.MtcnnDetector()


@needs_mtcnn
@pytest.mark.parametrize("name,expected", [("astronaut.png", ASTRONAUT), ("grace_hopper.jpg", GRACE)])
def test_mtcnn_finds_the_face_and_agrees_with_dlib(mtcnn, name, expected):
    faces = mtcnn.detect([load(name)])[0]
    assert len(faces) == 1
    f = faces[0]
    assert isinstance(f, Face) and f.score > 0.9 and f.points.shape == (5, 2)
    iod = expected["right_eye"][0] - expected["left_eye"][0]
    for k in ("left_eye", "right_eye"):
        assert close(f.landmarks[k], expected[k], 0.1 * iod), (k, f.landmarks[k], expected[k])
    assert "nose" not in f.landmarks  # MTCNN's nose point is the tip: reported as nose_tip
    lm = f.landmarks
    assert lm["mouth"] == pytest.approx(tuple((np.array(lm["mouth_left"]) + lm["mouth_right"]) / 2))
    assert lm["mouth"][1] > lm["nose_tip"][1] > lm["left_eye"][1]


@needs_mtcnn
def test_mtcnn_batch_options_and_config(mtcnn):
    imgs = [load("fairface_0020.jpg"), load("astronaut.png")]
    batch = mtcnn.detect(imgs)
    assert [len(fs) for fs in batch] == [2, 1]
    assert batch[0][0].size >= batch[0][1].size
    single = mtcnn.detect(imgs[:1])[0]
    assert [f.box for f in single] == [f.box for f in batch[0]]
    det = mtcnn_mod.MtcnnDetector.from_config({"detector": "mtcnn", "largest_only": True, "min_face_size": 40})
    assert isinstance(det, Detector) and len(det.detect(imgs[:1])[0]) == 1
    tiny = [np.zeros((1, 1, 3), np.uint8), np.zeros((10, 7, 3), np.uint8), np.full((60, 40, 3), 128, np.uint8)]
    assert mtcnn.detect(tiny) == [[], [], []]
    with pytest.raises(ConfigError, match="detect.thresholds"):
        mtcnn_mod.MtcnnDetector(thresholds=[0.5])
    with pytest.raises(ConfigError, match="detect.upsampling"):
        mtcnn_mod.MtcnnDetector.from_config({"upsampling": 1})
    # the keys the pipeline passes to any detector are accepted
    common = {"upsample": 1, "min_face_size": 0.0, "largest_only": False, "max_side": 2048, "threshold": 0.1}
    det = mtcnn_mod.MtcnnDetector.from_config(common)
    assert det.search_size == 12.0 and det.thresholds[2] == pytest.approx(0.8)
    assert mtcnn_mod.MtcnnDetector().search_size == 20.0
    assert mtcnn_mod.MtcnnDetector(min_face_size=48).search_size == 48.0


@needs_mtcnn
def test_mtcnn_max_side_maps_back():
    faces = mtcnn_mod.MtcnnDetector(max_side=300).detect([load("grace_hopper.jpg")])[0]
    assert len(faces) == 1
    iod = GRACE["right_eye"][0] - GRACE["left_eye"][0]
    for k in ("left_eye", "right_eye"):
        assert close(faces[0].landmarks[k], GRACE[k], 0.12 * iod)


def test_mtcnn_availability_names_the_install_command(monkeypatch):
    monkeypatch.setattr(mtcnn_mod, "weights_dir", lambda: None)
    ok, why = mtcnn_mod.MtcnnDetector.available()
    assert not ok and "pip install --no-deps facenet-pytorch" in why
    from starcli.errors import PluginError

    with pytest.raises(PluginError, match="facenet-pytorch"):
        mtcnn_mod.MtcnnDetector()


def test_mtcnn_nms_and_box_helpers():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 4, 4]], dtype=float)
    scores = np.array([0.9, 0.8, 0.7, 0.95])
    assert mtcnn_mod.nms(boxes, scores, 0.5).tolist() == [3, 0, 2]
    assert mtcnn_mod.nms(boxes, scores, 0.5, min_mode=True).tolist() == [3, 2]
    sq = mtcnn_mod.square(np.array([[0.0, 0.0, 10.0, 20.0]]))
    assert sq.tolist() == [[-5.0, 0.0, 15.0, 20.0]]
    reg = mtcnn_mod.regress(np.array([[0.0, 0.0, 10.0, 20.0]]), np.array([[0.1, 0.1, -0.1, 0.0]]))
    assert reg.tolist() == [[1.0, 2.0, 9.0, 20.0]]


def test_dlib_detector_is_thread_safe(dlib0):
    from concurrent.futures import ThreadPoolExecutor

    assert DlibDetector.thread_safe
    imgs = [load("astronaut.png"), load("grace_hopper.jpg"), load("fairface_0020.jpg"), load("fairface_0001.jpg")]
    expected = [[f.box for f in fs] for fs in dlib0.detect(imgs)]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda im: [f.box for f in dlib0.detect([im])[0]], imgs * 2))
    assert got == expected * 2
