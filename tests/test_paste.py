"""Tests of starcli.paste: identity round trip, bit-identity outside the mask, colour matching."""

from __future__ import annotations

import doctest
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import starcli.paste
from starcli.align import CELEBA_TEMPLATE, estimate_transforms, face_points, warp_to_crops
from starcli.detect import DlibDetector, Face
from starcli.errors import InputError
from starcli.paste import colour_offsets, face_mask, paste_back

DATA = Path(__file__).parent / "data"


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Small per-face tensors: one thread is 20-50x faster than two when the other core is busy."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def load(name: str) -> torch.Tensor:
    img = np.asarray(Image.open(DATA / name).convert("RGB"))
    return torch.from_numpy(img.copy()).permute(2, 0, 1).float() / 255.0


def transforms_for(faces_landmarks: list[dict], size: int) -> torch.Tensor:
    z = np.zeros((0, 2))
    faces = [Face((0, 0, 1, 1), 1.0, lm, z) for lm in faces_landmarks]
    pts, tpl = face_points(faces, CELEBA_TEMPLATE)
    return estimate_transforms(pts, tpl, size)


# landmarks measured with dlib (tests/test_detect.py); fixed here so paste tests need no detector
ASTRONAUT = {"left_eye": (203.5, 102.0), "right_eye": (246.0, 104.5), "nose": (224.0, 135.0)}


def frame_mask(frame: torch.Tensor, M: torch.Tensor, size: int, feather: float = starcli.paste.DEFAULT_FEATHER):
    """The mask as pasted into the frame: paste white crops onto a black frame."""
    n = M.shape[0]
    return paste_back(torch.zeros_like(frame), torch.ones(n, 3, size, size), M, feather=feather,
                      colour_match=False, detail=False)[0]


def test_doctests():
    assert doctest.testmod(starcli.paste).failed == 0


def test_mask_is_cached_feathered_and_zero_at_the_border():
    m = face_mask(128)
    assert m.shape == (128, 128) and m.dtype == torch.float32
    assert float(m[64, 64]) == 1.0 and float(m.min()) == 0.0
    assert bool((m[0] == 0).all() and (m[-1] == 0).all() and (m[:, 0] == 0).all() and (m[:, -1] == 0).all())
    assert 0.3 < float(m.mean()) < 0.9
    # feather: values strictly between 0 and 1 on a band
    assert int(((m > 0.05) & (m < 0.95)).sum()) > 500
    starcli.paste._masks.cache_clear()
    face_mask(96)
    face_mask(96)
    assert starcli.paste._masks.cache_info().hits >= 1
    torch.testing.assert_close(m, m.flip(1))  # symmetric left/right


@pytest.mark.parametrize("size", [128, 256])
def test_identity_round_trip_on_a_real_photo(size):
    frame = load("astronaut.png")
    M = transforms_for([ASTRONAUT], size)
    crops = warp_to_crops([frame], M, [0], size)
    out = paste_back(frame, crops, M)  # identity translator
    mask = frame_mask(frame, M, size)
    inside = mask > 0
    assert int(inside.sum()) > 5000
    err = (out - frame).abs().amax(0)
    assert float(err[inside].max()) <= 1.0 / 255.0
    assert torch.equal(out[:, ~inside], frame[:, ~inside])


@pytest.mark.skipif(not DlibDetector.available()[0], reason="dlib missing")
def test_identity_round_trip_with_detected_faces_several_per_frame():
    img = np.asarray(Image.open(DATA / "fairface_0020.jpg").convert("RGB"))
    faces = DlibDetector().detect([img])[0]
    assert len(faces) == 2
    frame = load("fairface_0020.jpg")
    pts, tpl = face_points(faces, CELEBA_TEMPLATE)
    M = estimate_transforms(pts, tpl, 128)
    crops = warp_to_crops([frame], M, [0, 0], 128)
    out = paste_back(frame, crops, M, crops)
    assert float((out - frame).abs().max()) <= 1.0 / 255.0


def test_pixels_outside_the_mask_are_bit_identical_after_an_edit():
    frame = load("astronaut.png")
    M = transforms_for([ASTRONAUT], 128)
    crops = warp_to_crops([frame], M, [0], 128)
    g = torch.Generator().manual_seed(0)
    edited = (crops * 0.5 + torch.rand(crops.shape, generator=g) * 0.5).clamp(0, 1)
    out = paste_back(frame, edited, M, crops)
    mask = frame_mask(frame, M, 128)
    changed = (out != frame).any(0)
    assert int(changed.sum()) > 5000  # the face changed
    assert not bool((changed & (mask == 0)).any())  # nothing changed outside the mask
    assert torch.equal(out[:, mask == 0], frame[:, mask == 0])
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_colour_match_removes_a_tint_at_the_seam_but_keeps_interior_edits():
    frame = load("astronaut.png")
    size = 128
    M = transforms_for([ASTRONAUT], size)
    crops = warp_to_crops([frame], M, [0], size)
    edited = crops.clone()
    edited[:, 0] += 0.12  # generator tint on red over the whole crop
    edited[:, :, 50:80, 50:78] = torch.tensor([0.1, 0.1, 0.9])[:, None, None]  # interior edit
    edited = edited.clamp(0, 1)
    off = colour_offsets(edited, crops)
    assert off[0, 0] == pytest.approx(0.12, abs=0.02) and abs(float(off[0, 1])) < 0.01
    out = paste_back(frame, edited, M, crops)
    raw = paste_back(frame, edited, M, crops, colour_match=False)
    mask = frame_mask(frame, M, size)
    band = (mask > 0.1) & (mask < 0.9)
    # at the seam the red shift is gone with colour matching, present without
    assert float((out - frame)[0][band].abs().mean()) < 0.01
    assert float((raw - frame)[0][band].abs().mean()) > 0.03
    # the interior edit survives: the patch centre is blue in the output
    inv = torch.linalg.inv(torch.cat([M[0], torch.tensor([[0.0, 0.0, 1.0]])]))
    cx, cy, _ = (inv @ torch.tensor([64.0, 65.0, 1.0])).tolist()
    px = out[:, round(cy), round(cx)]
    assert float(px[2]) > 0.75 and float(px[0]) < 0.3


def test_faces_overlapping_the_frame_border_and_order():
    frame = load("grace_hopper.jpg")
    # one face cut by the left border, one by the bottom-right corner
    M = torch.tensor([[[0.5, 0.0, 30.0], [0.0, 0.5, -100.0]],
                      [[0.4, 0.1, -190.0], [-0.1, 0.4, -180.0]]])
    crops = warp_to_crops([frame], M, [0, 0], 96)
    edited = 1.0 - crops
    out = paste_back(frame, edited, M, crops, colour_match=False)
    assert out.shape == frame.shape
    mask = frame_mask(frame, M, 96)
    assert bool(mask[:, 0].max() > 0) and bool(mask[-1].max() > 0)
    assert torch.equal(out[:, mask == 0], frame[:, mask == 0])
    assert float((out - frame).abs()[:, mask > 0.99].mean()) > 0.1
    # identity still exact with faces on the border
    torch.testing.assert_close(paste_back(frame, crops, M), frame, atol=1 / 255, rtol=0)


def test_direct_mode_and_inplace():
    frame = load("astronaut.png")
    M = transforms_for([ASTRONAUT], 256)
    crops = warp_to_crops([frame], M, [0], 256)
    direct = paste_back(frame, crops, M, detail=False, colour_match=False)
    mask = frame_mask(frame, M, 256)
    # resampling twice blurs a little but stays close
    assert float((direct - frame).abs()[:, mask > 0].mean()) < 0.02
    copy = frame.clone()
    res = paste_back(copy, crops * 0.9, M, crops, inplace=True)
    assert res is copy and not torch.equal(copy, frame)
    torch.testing.assert_close(res, paste_back(frame, crops * 0.9, M, crops))


def test_errors_and_empty():
    frame = torch.rand(3, 40, 40)
    assert torch.equal(paste_back(frame, torch.zeros(0, 3, 32, 32), torch.zeros(0, 2, 3)), frame)
    with pytest.raises(InputError, match="frame"):
        paste_back(torch.rand(40, 40), torch.zeros(1, 3, 32, 32), torch.eye(2, 3)[None])
    with pytest.raises(InputError, match="crops"):
        paste_back(frame, torch.zeros(1, 3, 32, 16), torch.eye(2, 3)[None])
    with pytest.raises(InputError, match="transforms"):
        paste_back(frame, torch.zeros(2, 3, 32, 32), torch.eye(2, 3)[None])
    with pytest.raises(InputError, match="feather"):
        face_mask(64, feather=0.5)
    with pytest.raises(InputError, match="float"):
        paste_back((frame * 255).byte(), torch.zeros(1, 3, 32, 32), torch.eye(2, 3)[None])
    # float64 frames work and keep their dtype
    f64 = frame.double()
    M = torch.tensor([[[1.0, 0.0, -4.0], [0.0, 1.0, -4.0]]])
    out = paste_back(f64, warp_to_crops([f64], M, [0], 32) * 0.5, M)
    assert out.dtype == torch.float64 and not torch.equal(out, f64)


@pytest.mark.skipif(not DlibDetector.available()[0], reason="dlib missing")
def test_batch_helpers_round_trip_over_several_photos():
    from starcli.align import crop_faces
    from starcli.paste import paste_frames

    names = ["astronaut.png", "fairface_0020.jpg", "grace_hopper.jpg"]
    imgs = [np.asarray(Image.open(DATA / n).convert("RGB")) for n in names]
    faces = DlibDetector().detect(imgs)
    frames = [load(n) for n in names]
    crops, M, idx = crop_faces(frames, faces, 128)
    assert crops.shape == (4, 3, 128, 128) and idx.tolist() == [0, 1, 1, 2]
    outs = paste_frames(frames, crops, M, idx, crops)
    for out, frame in zip(outs, frames):
        assert out.shape == frame.shape and float((out - frame).abs().max()) <= 1 / 255
    edited = paste_frames(frames, 1 - crops, M, idx, crops)
    assert all(not torch.equal(e, f) for e, f in zip(edited, frames))
    with pytest.raises(InputError, match="float"):
        crop_faces([(frames[0] * 255).byte()], faces[:1], 128)


def test_colour_match_keeps_a_hair_colour_change_reaching_the_seam():
    frame = load("astronaut.png")
    size = 128
    M = transforms_for([ASTRONAUT], size)
    crops = warp_to_crops([frame], M, [0], size)
    edited = crops.clone()
    hair = slice(0, int(0.3 * size))  # top 30% of a CelebA crop: hair, partly in the feather band
    edited[:, 0, hair] += 0.3
    edited[:, 2, hair] -= 0.2
    edited = edited.clamp(0, 1)
    off = colour_offsets(edited, crops)
    assert float(off.abs().max()) < 0.01  # the band's median ignores a change on a minority of it
    out = paste_back(frame, edited, M, crops)
    raw = paste_back(frame, edited, M, crops, colour_match=False)
    torch.testing.assert_close(out, raw, atol=0.01, rtol=0)
    inv = torch.linalg.inv(torch.cat([M[0], torch.tensor([[0.0, 0.0, 1.0]])]))
    cx, cy, _ = (inv @ torch.tensor([63.5, 0.25 * size - 0.5, 1.0])).tolist()
    assert float(out[0, round(cy), round(cx)] - frame[0, round(cy), round(cx)]) > 0.2

