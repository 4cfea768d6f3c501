"""Tests of starcli.align: similarity fit, template, batched region-of-interest warps."""

from __future__ import annotations

import doctest
import math
from pathlib import Path

import kornia.geometry.transform as KT
import numpy as np
import pytest
import torch
from PIL import Image

import starcli.align
from starcli.align import (
    CELEBA_TEMPLATE,
    crop_regions,
    estimate_transforms,
    face_points,
    invert_transforms,
    template_tensor,
    warp_to_crops,
)
from starcli.detect import DlibDetector, Face
from starcli.errors import InputError

DATA = Path(__file__).parent / "data"
needs_dlib = pytest.mark.skipif(not DlibDetector.available()[0], reason="dlib or its landmark model missing")


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Small per-face tensors: one thread is 20-50x faster than two when the other core is busy."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def load(name: str) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(Image.open(DATA / name).convert("RGB")))


def to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img.copy()).permute(2, 0, 1).float() / 255.0


def random_similarity(g: torch.Generator, n: int) -> torch.Tensor:
    ang = torch.rand(n, generator=g, dtype=torch.float64) * 2 * math.pi - math.pi
    sc = 0.2 + 3 * torch.rand(n, generator=g, dtype=torch.float64)
    t = torch.randn(n, 2, generator=g, dtype=torch.float64) * 100
    R = torch.stack([torch.stack([sc * ang.cos(), -sc * ang.sin()], -1),
                     torch.stack([sc * ang.sin(), sc * ang.cos()], -1)], -2)
    return torch.cat([R, t[..., None]], -1)


def apply(M: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    return p @ M[..., :2].transpose(-1, -2) + M[..., None, :, 2]


def test_doctests():
    assert doctest.testmod(starcli.align).failed == 0


def test_celeba_template_matches_celeba_geometry():
    # 1-based pixels of the 178x218 aligned frame, 20 rows dropped, normalised by 178
    def norm(x, y):
        return ((x - 1 + 0.5) / 178, (y - 1 - 20 + 0.5) / 178)

    for name, xy in [("left_eye", (70.745, 112)), ("right_eye", (108.237, 112)), ("mouth", (89.432, 153.514))]:
        assert CELEBA_TEMPLATE[name] == pytest.approx(norm(*xy), abs=1e-5)
    nose = CELEBA_TEMPLATE["nose"]
    assert 0.48 < nose[0] < 0.52 and CELEBA_TEMPLATE["left_eye"][1] < nose[1] < CELEBA_TEMPLATE["mouth"][1]


def test_similarity_fit_recovers_a_known_similarity_exactly():
    g = torch.Generator().manual_seed(0)
    n, k, size = 64, 5, 128
    template = torch.rand(k, 2, generator=g, dtype=torch.float64)
    true = random_similarity(g, n)  # crop -> frame
    q = template * size - 0.5
    frame_pts = apply(true, q.expand(n, k, 2))
    M = estimate_transforms(frame_pts.float(), template.float(), size).double()
    expected = invert_transforms(true.float()).double()
    torch.testing.assert_close(M, expected, atol=2e-4, rtol=1e-4)
    # back in crop pixels the template is reproduced to float precision
    torch.testing.assert_close(apply(M, frame_pts), q.expand(n, k, 2), atol=2e-3, rtol=0)


def test_similarity_fit_is_not_anisotropic_nor_reflective():
    g = torch.Generator().manual_seed(1)
    n = 50
    tpl = template_tensor(CELEBA_TEMPLATE, ["left_eye", "right_eye", "nose", "mouth"])
    pts = tpl * 300 + 40 + torch.randn(n, 4, 2, generator=g) * 6  # noisy, non-similar points
    pts[0] = pts[0] * torch.tensor([-1.0, 1.0])  # mirrored face: still no reflection
    M = estimate_transforms(pts, tpl, 256)
    A = M[:, :, :2]
    torch.testing.assert_close(A[:, 0, 0], A[:, 1, 1])
    torch.testing.assert_close(A[:, 0, 1], -A[:, 1, 0])
    assert bool((torch.linalg.det(A) > 0).all())


def test_similarity_fit_is_least_squares():
    # perturbing the solution never lowers the squared error
    g = torch.Generator().manual_seed(2)
    tpl = torch.rand(4, 2, generator=g)
    pts = torch.rand(1, 4, 2, generator=g) * 100
    M = estimate_transforms(pts, tpl, 64).double()
    q = tpl.double() * 64 - 0.5

    def err(m):
        return float(((apply(m, pts.double()) - q) ** 2).sum())

    base = err(M)
    for da, db, tx, ty in [(1e-3, 0, 0, 0), (0, 1e-3, 0, 0), (0, 0, 0.05, 0), (0, 0, 0, 0.05), (-1e-3, 0, 0, 0)]:
        P = M.clone()
        P[0, 0, 0] += da
        P[0, 1, 1] += da
        P[0, 1, 0] += db
        P[0, 0, 1] -= db
        P[0, 0, 2] += tx
        P[0, 1, 2] += ty
        assert err(P) > base


def test_weights_and_errors():
    tpl = torch.tensor([[0.2, 0.2], [0.8, 0.2], [0.5, 0.8]])
    pts = torch.tensor([[[10.0, 10.0], [50.0, 10.0], [30.0, 60.0]]])
    M = estimate_transforms(pts, tpl, 100, weights=torch.tensor([1.0, 1.0, 0.0]))
    # with the third point ignored, the two eyes map exactly
    torch.testing.assert_close(apply(M, pts)[0, :2], tpl[:2] * 100 - 0.5, atol=1e-4, rtol=0)
    with pytest.raises(InputError, match="coincide"):
        estimate_transforms(torch.ones(1, 3, 2), tpl, 100)
    with pytest.raises(InputError, match="at least 2"):
        estimate_transforms(torch.ones(1, 1, 2), tpl[:1], 100)
    with pytest.raises(InputError, match=r"\(N, K, 2\)"):
        estimate_transforms(torch.ones(3, 2), tpl, 100)


def test_face_points_uses_the_shared_template_names():
    z = np.zeros((0, 2))
    a = Face((0, 0, 1, 1), 1.0, {"left_eye": (1.0, 2.0), "right_eye": (3.0, 2.0), "nose": (2.0, 3.0)}, z)
    b = Face((0, 0, 1, 1), 1.0, {"left_eye": (1.0, 2.0), "right_eye": (3.0, 2.0), "mouth": (2.0, 4.0),
                                 "nose_tip": (2.0, 3.0)}, z)
    pts, tpl = face_points([a], CELEBA_TEMPLATE)
    assert pts.shape == (1, 3, 2) and torch.equal(tpl, template_tensor(CELEBA_TEMPLATE, ["left_eye", "right_eye", "nose"]))
    pts, tpl = face_points([b], CELEBA_TEMPLATE)
    assert pts.shape == (1, 3, 2) and torch.equal(tpl[2], torch.tensor(CELEBA_TEMPLATE["mouth"]))
    pts, tpl = face_points([a, b], CELEBA_TEMPLATE)
    assert pts.shape == (2, 2, 2) and tpl.shape == (2, 2)
    c = Face((0, 0, 1, 1), 1.0, {"left_eye": (1.0, 2.0)}, z)
    with pytest.raises(InputError, match="fewer than 2"):
        face_points([c], CELEBA_TEMPLATE)


def reference_warp(frame: torch.Tensor, M: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """kornia warp of the whole frame (what the region-of-interest warp must reproduce)."""
    out = KT.warp_affine(frame[None], M[None], dsize=(size, size), mode=mode, padding_mode="border",
                         align_corners=True)[0]
    return out.clamp(0, 1) if mode == "bicubic" else out


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_region_warp_equals_whole_frame_warp(mode):
    g = torch.Generator().manual_seed(3)
    frames = [torch.rand(3, 90, 120, generator=g), torch.rand(3, 150, 70, generator=g)]
    M = torch.tensor([
        [[1.3, 0.2, -30.0], [-0.2, 1.3, -40.0]],    # interior face, upscaled
        [[0.8, -0.5, 10.0], [0.5, 0.8, -60.0]],     # rotated
        [[1.0, 0.0, 20.0], [0.0, 1.0, 25.0]],       # overlaps the top-left frame border
        [[0.9, 0.1, -50.0], [-0.1, 0.9, -120.0]],   # overlaps the bottom border of frame 1
        [[1.0, 0.0, 500.0], [0.0, 1.0, 500.0]],     # entirely outside the frame
    ])
    idx = [0, 0, 0, 1, 1]
    crops = warp_to_crops(frames, M, idx, 48, mode=mode, antialias=False)
    assert crops.shape == (5, 3, 48, 48) and crops.dtype == torch.float32
    for j in range(5):
        torch.testing.assert_close(crops[j], reference_warp(frames[idx[j]], M[j], 48, mode), atol=2e-5, rtol=0)


def test_batched_warp_equals_per_face_warp():
    imgs = [load("astronaut.png"), load("fairface_0020.jpg"), load("grace_hopper.jpg")]
    frames = [to_tensor(im) for im in imgs]
    g = torch.Generator().manual_seed(4)
    M = random_similarity(g, 6).float()
    M[:, :, :2] = invert_transforms(M)[:, :, :2]  # crop -> frame scales 0.3..5
    M[:, :, 2] = torch.tensor([[-150.0, -80], [-100, -50], [20, 10], [-200, -200], [-60, -90], [0, 0]])
    idx = torch.tensor([0, 0, 1, 1, 2, 2])
    batched = warp_to_crops(frames, M, idx, 64)
    for j in range(6):
        single = warp_to_crops([frames[int(idx[j])]], M[j:j + 1], [0], 64)
        # (padding regions to a common size only changes float rounding of kornia's grid)
        torch.testing.assert_close(batched[j:j + 1], single, atol=2e-5, rtol=0)
    # a (B, 3, H, W) batch tensor works as well as a list
    stack = torch.stack([frames[0], frames[0]])
    torch.testing.assert_close(warp_to_crops(stack, M[:2], [1, 0], 64), batched[:2], atol=2e-5, rtol=0)


def test_large_faces_are_box_filtered_before_the_warp():
    frame = to_tensor(load("astronaut.png"))
    big = torch.nn.functional.interpolate(frame[None], scale_factor=8, mode="nearest")[0]  # 4096x4096
    tpl = template_tensor(CELEBA_TEMPLATE, ["left_eye", "right_eye", "nose"])
    pts = torch.tensor([[[203.5, 102.0], [246.0, 104.5], [224.0, 135.0]]])
    # crop 256: the small frame is upsampled (no aliasing), the 8x frame shrunk ~6.5x
    M_small = estimate_transforms(pts, tpl, 256)
    M_big = estimate_transforms(pts * 8 + 3.5, tpl, 256)  # nearest 8x: p_big = 8 p + 3.5
    small = warp_to_crops([frame], M_small, [0], 256)
    large = warp_to_crops([big], M_big, [0], 256)
    err = float((small - large).abs().mean())  # measured 0.0048
    aliased = warp_to_crops([big], M_big, [0], 256, antialias=False)  # measured 0.011
    assert err < 0.008 and err < 0.6 * float((small - aliased).abs().mean())


def test_crop_regions_cover_the_crop():
    M = torch.tensor([[[0.5, 0.0, -10.0], [0.0, 0.5, -20.0]]])  # crop edge -0.5 -> frame 19, 63.5 -> 147
    (r,) = crop_regions(M, 64, [(1000, 1000)], margin=0)
    assert r == (19, 39, 148, 168)
    (r,) = crop_regions(M, 64, [(100, 100)], margin=0)
    assert r == (19, 39, 100, 100)


def test_warp_errors():
    fr = torch.rand(3, 20, 20)
    M = torch.eye(2, 3)[None]
    with pytest.raises(InputError, match="frame_index"):
        warp_to_crops([fr], M, [0, 0], 8)
    with pytest.raises(InputError, match="out of range"):
        warp_to_crops([fr], M, [1], 8)
    with pytest.raises(InputError, match=r"\(3, H, W\)"):
        warp_to_crops([torch.rand(20, 20)], M, [0], 8)
    assert warp_to_crops([fr], torch.zeros(0, 2, 3), [], 8).shape == (0, 3, 8, 8)


@needs_dlib
@pytest.mark.parametrize("name", ["astronaut.png", "grace_hopper.jpg", "fairface_0001.jpg", "fairface_0020.jpg"])
def test_aligned_crop_puts_landmarks_on_the_template(name):
    size = 256
    det = DlibDetector()  # models are loaded once per process
    img = load(name)
    faces = det.detect([img])[0]
    pts, tpl = face_points(faces, CELEBA_TEMPLATE)
    M = estimate_transforms(pts, tpl, size)
    crops = warp_to_crops([to_tensor(img)], M, [0] * len(faces), size)
    target = tpl * size - 0.5
    # the fit itself: landmarks land within a few pixels of the template
    assert float((apply(M, pts) - target).norm(dim=-1).max()) < 4.0
    # re-detect on each aligned crop: eyes and nose within a few pixels of the template points
    for crop in crops:
        arr = (crop.permute(1, 2, 0) * 255).round().byte().numpy()
        found = det.detect([arr])[0]
        assert found, "no face in the aligned crop"
        f = found[0]
        for k, name_ in enumerate(["left_eye", "right_eye", "nose"]):
            d = np.hypot(*(np.array(f.landmarks[name_]) - target[k].numpy()))
            assert d < 5.0, (name_, f.landmarks[name_], target[k])
