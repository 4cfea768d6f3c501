"""Procedural faces with exact attribute labels and region masks.

A face is described by two independent parts:

* :class:`FaceParams` -- the *nuisance* (identity, skin tone, hair style, background, pose,
  lighting, noise seed), drawn by :func:`sample_params`;
* an attribute dict ``{name: 0/1}`` over :data:`ATTRIBUTES`, drawn by :func:`sample_attributes`.

:func:`render_face` is pure: the same params and attributes give the same bytes, and the same
params with other attributes give the *same face* with only those attributes changed (a
counterfactual). It returns the image and boolean region masks (``hair``, ``eyeglasses``,
``mouth``, ``beard``, ``age``, ``face``, ``background``) that do not depend on the attribute
values, so an edit can be measured inside them by :func:`measure_attributes` without a learned
judge.

Geometry: faces are drawn in the aligned-crop geometry of the CelebA template used by the official
StarGAN models (``docs/architecture.md``): at crop side ``S`` the eye centres sit at
``(0.39463*S-0.5, 0.51404*S-0.5)`` and ``(0.60526*S-0.5, 0.51404*S-0.5)`` and the mouth centre at
``(0.49962*S-0.5, 0.74727*S-0.5)``, before a small pose jitter (roll, scale, shift) that
:func:`face_landmarks` reports exactly. Points are ``(x, y)`` pixels, origin top-left, pixel
centres at integers. Images are RGB ``uint8`` ``(H, W, 3)``.

>>> rng = np.random.default_rng(0)
>>> p, a = sample_params(rng), sample_attributes(rng)
>>> img, masks = render_face(p, a, 64)
>>> img.shape, img.dtype, sorted(masks) == sorted(MASK_NAMES)
((64, 64, 3), dtype('uint8'), True)

This module does no printing; :mod:`starcli.cli.datasets_cmd` is its command line.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from starcli.errors import InputError
from starcli.spec import CELEBA_POINTS

__all__ = [
    "ATTRIBUTES",
    "HAIR_COLOURS",
    "GROUPS",
    "BINARY_ATTRIBUTES",
    "MASK_NAMES",
    "GENERATOR_VERSION",
    "TEMPLATE",
    "FaceParams",
    "sample_params",
    "sample_attributes",
    "sample_counterfactual",
    "render_face",
    "binary_scores",
    "face_landmarks",
    "changed_region",
    "measure_attributes",
    "measure_scores",
    "generate_dataset",
    "compose_scene",
    "generate_scenes",
    "scene_background",
    "render_person",
    "changed_factors",
    "dataset_item",
]

HAIR_COLOURS: tuple[str, ...] = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Red_Hair", "Gray_Hair")
BINARY_ATTRIBUTES: tuple[str, ...] = ("Eyeglasses", "Smiling", "Beard", "Young")
ATTRIBUTES: tuple[str, ...] = HAIR_COLOURS + BINARY_ATTRIBUTES
GROUPS: list[list[str]] = [list(HAIR_COLOURS)]
MASK_NAMES: tuple[str, ...] = ("hair", "eyeglasses", "mouth", "beard", "age", "face", "background")
GENERATOR_VERSION = "starcli-synth/5"

#: CelebA crop template in normalised crop units (pixel ``x = u * S - 0.5``): the one constant
#: shared with alignment and model cards.
TEMPLATE: dict[str, tuple[float, float]] = CELEBA_POINTS

_EYE_Y = 0.51404
_EYE_DX = (0.60526 - 0.39463) / 2.0  # half the inter-eye distance
_MOUTH_X = 0.49962
_MOUTH_Y = 0.74727
_NOSE_Y = TEMPLATE["nose"][1]
# Where the features are drawn relative to the reported landmarks; calibrated so that dlib's
# 5-point model (eye-corner midpoints, nose base) agrees with the reported points.
_EYE_DRAW_DX = 0.0079
_EYE_DRAW_DY = -0.0034
_NOSE_DRAW_Y = _NOSE_Y - 0.014
_CX = 0.49995  # face symmetry axis (midpoint of the eyes)

# Hair colour ranges: (dark end, light end) in RGB; the nuisance ``hair_tone`` picks a point.
_HAIR_RGB: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "Black_Hair": ((18, 16, 16), (45, 38, 36)),
    "Brown_Hair": ((92, 58, 34), (135, 92, 58)),
    "Blond_Hair": ((205, 168, 95), (240, 215, 150)),
    "Red_Hair": ((150, 48, 22), (200, 82, 38)),
    "Gray_Hair": ((150, 150, 152), (215, 215, 218)),
}

# Skin tone anchors from very light to very dark (interpolated by ``skin_tone`` in [0, 1]).
_SKIN_ANCHORS = np.array(
    [
        (250, 222, 200),
        (236, 192, 160),
        (214, 164, 124),
        (180, 126, 88),
        (140, 92, 62),
        (108, 71, 50),
        (90, 59, 43),
    ],
    dtype=np.float64,
)

_FRAME_COLOURS = (
    (20, 20, 24),  # black
    (70, 40, 20),  # tortoise / dark brown
    (25, 45, 120),  # navy
    (170, 30, 40),  # red
    (200, 200, 210),  # silver
    (215, 175, 60),  # gold
)


# ----------------------------------------------------------------------------------- parameters
@dataclass(frozen=True)
class FaceParams:
    """Nuisance parameters of one face (everything except the attributes).

    All fields are plain floats/ints/tuples so a params object can be stored as JSON
    (``dataclasses.asdict``) and rebuilt with ``FaceParams(**d)`` (tuples become lists in JSON;
    the renderer accepts both).
    """

    skin: tuple[float, float, float]
    face_w: float  # half width of the face at the cheekbones (normalised units)
    face_h: float  # vertical scale of the head (1 = average)
    jaw: float  # jaw squareness exponent (1.6 round .. 2.8 square)
    chin_w: float  # half width of the flat part of the chin
    hair_style: int  # 0 short, 1 medium (to the jaw), 2 long (to the shoulders)
    hair_volume: float
    hairline: float  # 0 high forehead .. 1 low
    bangs: bool
    part: float  # horizontal offset of the parting
    hair_tone: float  # position inside the colour range of the hair class (0 dark .. 1 light)
    brow_dark: float  # brow darkness relative to skin (0.3 .. 0.6 multiplier)
    brow_thick: float
    eye_size: float
    iris: tuple[float, float, float]
    nose_w: float
    lip: tuple[float, float, float]
    mouth_w: float  # half width of the mouth
    beard_style: int  # 0 full, 1 goatee + moustache, 2 chin strap + moustache
    glasses_style: int  # 0 round, 1 rectangular, 2 wide/aviator
    frame: tuple[float, float, float]
    frame_w: float
    lens_tint: tuple[float, float, float]
    age_amount: float  # strength of age cues when Young == 0
    clothing: tuple[float, float, float]
    neckline: int  # 0 round, 1 V, 2 collar
    bg_kind: int  # 0 linear gradient, 1 radial, 2 stripes, 3 blotches, 4 wall + floor
    bg_a: tuple[float, float, float]
    bg_b: tuple[float, float, float]
    bg_angle: float
    bg_freq: float
    roll: float  # degrees
    scale: float
    shift: tuple[float, float]  # normalised units (fraction of the crop side)
    light_angle: float
    light_strength: float
    noise: float  # gaussian noise sigma in 0..255 units
    seed: int  # seed for textures and noise (fixed per face)


def _uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _rgb(values: Sequence[float]) -> tuple[float, float, float]:
    return (round(float(values[0]), 2), round(float(values[1]), 2), round(float(values[2]), 2))


def _random_colour(rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float]) -> tuple[float, float, float]:
    import colorsys

    h = rng.uniform(0, 1)
    s = rng.uniform(*sat)
    v = rng.uniform(*val)
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return _rgb((r * 255, g * 255, b * 255))


def _skin_colour(t: float) -> np.ndarray:
    x = t * (len(_SKIN_ANCHORS) - 1)
    i = min(int(x), len(_SKIN_ANCHORS) - 2)
    f = x - i
    return _SKIN_ANCHORS[i] * (1 - f) + _SKIN_ANCHORS[i + 1] * f


def sample_params(rng: np.random.Generator) -> FaceParams:
    """Draw the nuisance of one face (identity, style, background, pose, lighting, noise).

    ``rng`` is a ``numpy.random.Generator``; the result depends only on its state.

    >>> sample_params(np.random.default_rng(1)) == sample_params(np.random.default_rng(1))
    True
    """
    skin = _skin_colour(rng.uniform(0, 1)) * rng.uniform(0.94, 1.06, 3)
    skin = np.clip(skin, 40, 255)
    lum = float(skin @ (0.299, 0.587, 0.114))
    # frame colour: keep some contrast with the skin
    frames = [c for c in _FRAME_COLOURS if abs(float(np.dot(c, (0.299, 0.587, 0.114))) - lum) > 45 or c[0] > 150]
    frame = frames[int(rng.integers(len(frames)))]
    iris_choices = ((60, 40, 25), (95, 65, 35), (70, 110, 150), (80, 120, 80), (40, 30, 25))
    iris = iris_choices[int(rng.integers(len(iris_choices)))]
    lip = np.clip(skin * np.array([0.82, 0.5, 0.52]) + np.array([22, 0, 4]), 0, 255)
    lip = lip * rng.uniform(0.9, 1.05)
    clothing = _random_colour(rng, (0.1, 0.8), (0.15, 0.9))
    bg_a = _random_colour(rng, (0.0, 0.7), (0.25, 0.98))
    bg_b = _random_colour(rng, (0.0, 0.7), (0.15, 0.95))
    return FaceParams(
        skin=_rgb(skin),
        face_w=_uniform(rng, 0.185, 0.225),
        face_h=_uniform(rng, 0.94, 1.06),
        jaw=_uniform(rng, 1.7, 2.8),
        chin_w=_uniform(rng, 0.025, 0.06),
        hair_style=int(rng.integers(3)),
        hair_volume=_uniform(rng, 0.01, 0.06),
        hairline=_uniform(rng, 0.0, 1.0),
        bangs=bool(rng.uniform() < 0.15),
        part=_uniform(rng, -0.06, 0.06),
        hair_tone=_uniform(rng, 0.0, 1.0),
        brow_dark=_uniform(rng, 0.28, 0.48),
        brow_thick=_uniform(rng, 0.015, 0.022),
        eye_size=_uniform(rng, 0.9, 1.1),
        iris=_rgb(iris),
        nose_w=_uniform(rng, 0.032, 0.045),
        lip=_rgb(lip),
        mouth_w=_uniform(rng, 0.052, 0.066),
        beard_style=int(rng.choice(3, p=(0.6, 0.2, 0.2))),
        glasses_style=int(rng.integers(3)),
        frame=_rgb(frame),
        frame_w=_uniform(rng, 0.007, 0.012),
        lens_tint=_rgb(_random_colour(rng, (0.0, 0.5), (0.5, 1.0))),
        age_amount=_uniform(rng, 0.75, 1.0),
        clothing=clothing,
        neckline=int(rng.integers(3)),
        bg_kind=int(rng.integers(5)),
        bg_a=bg_a,
        bg_b=bg_b,
        bg_angle=_uniform(rng, 0, 2 * math.pi),
        bg_freq=_uniform(rng, 2.0, 9.0),
        roll=_uniform(rng, -10.0, 10.0),
        scale=_uniform(rng, 0.92, 1.08),
        shift=(_uniform(rng, -0.03, 0.03), _uniform(rng, -0.03, 0.03)),
        light_angle=_uniform(rng, 0, 2 * math.pi),
        light_strength=_uniform(rng, 0.0, 0.18),
        noise=_uniform(rng, 0.5, 5.0),
        seed=int(rng.integers(2**31 - 1)),
    )


def sample_attributes(rng: np.random.Generator) -> dict[str, int]:
    """Draw attribute labels: one hair colour uniformly, each binary attribute with p = 0.5.

    >>> a = sample_attributes(np.random.default_rng(0))
    >>> list(a) == list(ATTRIBUTES), sum(a[h] for h in HAIR_COLOURS)
    (True, 1)
    """
    hair = int(rng.integers(len(HAIR_COLOURS)))
    out = {name: int(i == hair) for i, name in enumerate(HAIR_COLOURS)}
    for name in BINARY_ATTRIBUTES:
        out[name] = int(rng.uniform() < 0.5)
    return out


_FACTORS = ("hair",) + BINARY_ATTRIBUTES


def sample_counterfactual(rng: np.random.Generator, attributes: Mapping[str, int]) -> dict[str, int]:
    """Target attributes that differ from ``attributes`` in 1 or 2 factors.

    The factors are the hair colour (a change of colour counts as one) and each binary attribute.
    Flipping fair coins keeps the targets balanced like the sources.

    >>> a = {**{h: 0 for h in HAIR_COLOURS}, "Black_Hair": 1, "Eyeglasses": 0, "Smiling": 1,
    ...      "Beard": 0, "Young": 1}
    >>> t = sample_counterfactual(np.random.default_rng(0), a)
    >>> 1 <= len(changed_factors(a, t)) <= 2
    True
    """
    k = 1 + int(rng.uniform() < 0.5)
    factors = rng.choice(len(_FACTORS), size=k, replace=False)
    out = {name: int(attributes[name]) for name in ATTRIBUTES}
    for f in sorted(int(i) for i in factors):
        name = _FACTORS[f]
        if name == "hair":
            cur = _hair_name(out)
            others = [h for h in HAIR_COLOURS if h != cur]
            new = others[int(rng.integers(len(others)))]
            for h in HAIR_COLOURS:
                out[h] = int(h == new)
        else:
            out[name] = 1 - out[name]
    return out


def changed_factors(source: Mapping[str, int], target: Mapping[str, int]) -> list[str]:
    """Factors (``"hair"`` or a binary attribute name) on which two label dicts differ."""
    out = []
    if _hair_name(source) != _hair_name(target):
        out.append("hair")
    out += [n for n in BINARY_ATTRIBUTES if int(source[n]) != int(target[n])]
    return out


def _hair_name(attributes: Mapping[str, int]) -> str:
    on = [h for h in HAIR_COLOURS if int(attributes.get(h, 0))]
    if len(on) != 1:
        raise InputError(None, f"exactly one hair colour must be 1, got {on or 'none'}")
    return on[0]


# ------------------------------------------------------------------------------------- geometry
def _pose_matrix(params: FaceParams) -> np.ndarray:
    """2x3 matrix mapping canonical normalised points to posed normalised points."""
    c = np.array([_CX, (_EYE_Y + _MOUTH_Y) / 2])
    th = math.radians(params.roll)
    s = params.scale
    rot = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]]) * s
    t = c + np.asarray(params.shift, dtype=np.float64) - rot @ c
    return np.concatenate([rot, t[:, None]], axis=1)


def face_landmarks(params: FaceParams, size: int) -> dict[str, tuple[float, float]]:
    """Landmark positions of a render of ``params`` at crop side ``size``, in pixels.

    Keys ``left_eye``, ``right_eye`` (eye centres), ``nose`` (base of the nose) and ``mouth``
    (centre between the mouth corners); ``(x, y)`` with pixel centres at integers. They do not
    depend on the attributes.

    >>> p = sample_params(np.random.default_rng(0))
    >>> lm = face_landmarks(p, 128)
    >>> round(lm["right_eye"][0] - lm["left_eye"][0])  # about 0.21 * 128, scaled by the pose
    27
    """
    m = _pose_matrix(params)
    pts = {
        "left_eye": (_CX - _EYE_DX, _EYE_Y),
        "right_eye": (_CX + _EYE_DX, _EYE_Y),
        "nose": TEMPLATE["nose"],
        "mouth": (_MOUTH_X, _MOUTH_Y),
    }
    out = {}
    for k, (u, v) in pts.items():
        q = m @ np.array([u, v, 1.0])
        out[k] = (float(q[0] * size - 0.5), float(q[1] * size - 0.5))
    return out


# ------------------------------------------------------------------------------------- drawing
_UNIT_CIRCLE = {n: [(math.cos(t), math.sin(t)) for t in np.linspace(0, 2 * math.pi, n, endpoint=False)]
                for n in (16, 24, 40, 64)}


class _Canvas:
    """Draws in canonical normalised units on a supersampled RGB canvas plus region masks.

    Every point goes through the pose matrix ``m`` (canonical -> posed normalised units) and is
    scaled to the canvas side ``W`` (super-pixel continuous coordinates: ``X = u * W``).
    """

    def __init__(self, side: int, m: np.ndarray | None = None, k: int = 1):
        self.W = side
        self.k = k  # canvas pixels per output pixel
        if m is None:
            m = np.array([[1.0, 0, 0], [0, 1.0, 0]])
        self.m = [float(v) * side for v in m.reshape(-1)]
        self.s = float(math.sqrt(abs(np.linalg.det(m[:, :2]))))
        self.img = Image.new("RGB", (side, side), (0, 0, 0))
        self.draw = ImageDraw.Draw(self.img, "RGBA")
        self.masks = {name: Image.new("L", (side, side), 0) for name in ("alpha",) + MASK_NAMES[:-1]}
        self.mdraw = {k: ImageDraw.Draw(v) for k, v in self.masks.items()}

    def _xy(self, pts: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
        a, b, c, d, e, f = self.m
        return [(a * x + b * y + c, d * x + e * y + f) for x, y in pts]

    def _marks(self, fn: str, xy: list, mask: Sequence[str], erase: Sequence[str], **kw: Any) -> None:
        for name in mask:
            getattr(self.mdraw[name], fn)(xy, fill=255, **kw)
        for name in erase:
            getattr(self.mdraw[name], fn)(xy, fill=0, **kw)

    def ellipse(self, cx, cy, rx, ry, fill=None, mask=(), erase=(), draw=True):
        r = max(rx, ry) * self.W * self.s
        n = 16 if r < 12 else (24 if r < 30 else (40 if r < 80 else 64))
        pts = [(cx + rx * c, cy + ry * s) for c, s in _UNIT_CIRCLE[n]]
        self.polygon(pts, fill, mask, erase, draw)

    def polygon(self, pts, fill=None, mask=(), erase=(), draw=True):
        xy = self._xy(pts)
        if draw and fill is not None:
            self.draw.polygon(xy, fill=_c(fill))
        self._marks("polygon", xy, mask, erase)

    def line(self, pts, width, fill=None, mask=(), mask_width=None, draw=True, min_px=0.0):
        """Polyline of ``width`` normalised units and at least ``min_px`` output pixels wide at
        64 px (``min_px * sqrt(size / 64)`` pixels at other sizes, so thin strokes survive being
        judged at 64 px)."""
        xy = self._xy(pts)
        out_side = self.W / self.k
        wf = max(width * self.W * self.s, min_px * self.k * math.sqrt(max(out_side, 1.0) / 64.0))
        w = max(1, int(round(wf)))
        if draw and fill is not None:
            self.draw.line(xy, fill=_c(fill), width=w, joint="curve")
        if mask:
            extra = ((mask_width or width) - width) * self.W * self.s
            mw = max(1, int(round(wf + extra)))
            self._marks("line", xy, mask, (), width=mw)


def _c(fill) -> tuple[int, ...]:
    return tuple(int(round(min(255.0, max(0.0, float(v))))) for v in fill)


def _mul(col, f, alpha=None):
    out = [v * f for v in col[:3]]
    return (*out, alpha) if alpha is not None else tuple(out)


def _mix(a, b, t):
    return tuple(a[i] * (1 - t) + b[i] * t for i in range(3))


def _arc(cx, cy, rx, ry, a0, a1, n=16):
    """Points on an ellipse arc from angle a0 to a1 (degrees, y down)."""
    ts = np.radians(np.linspace(a0, a1, n))
    return [(cx + rx * math.cos(t), cy + ry * math.sin(t)) for t in ts]


def _face_outline(p: FaceParams) -> tuple[list[tuple[float, float]], dict[str, float]]:
    """Closed face contour (normalised units) and key heights."""
    hw = p.face_w
    top = _EYE_Y - 0.335 * p.face_h  # skull top
    cheek_y = _EYE_Y + 0.06
    chin = _MOUTH_Y + 0.125 * p.face_h
    right = []
    for t in np.linspace(0, 1, 14):  # top to cheek: ellipse quarter
        y = top + (cheek_y - top) * t
        x = hw * math.sqrt(max(0.0, 1 - ((cheek_y - y) / (cheek_y - top)) ** 2))
        right.append((_CX + x, y))
    q = p.jaw
    for t in np.linspace(0, 1, 16)[1:]:  # cheek to chin: superellipse with a flat chin
        y = cheek_y + (chin - cheek_y) * t
        x = p.chin_w + (hw - p.chin_w) * (max(0.0, 1 - t**q)) ** (1 / q)
        right.append((_CX + x, y))
    left = [(2 * _CX - x, y) for x, y in reversed(right)]
    pts = right + left[1:]
    return pts, {"top": top, "cheek": cheek_y, "chin": chin, "hw": hw}


def _half_width_at(outline: list[tuple[float, float]], y: float) -> float:
    best = 0.0
    pts = [pt for pt in outline if pt[0] >= _CX]
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if (y0 - y) * (y1 - y) <= 0 and y0 != y1:
            best = max(best, x0 + (x1 - x0) * (y - y0) / (y1 - y0) - _CX)
    return best


def _hair_colour(name: str, tone: float) -> tuple[float, float, float]:
    lo, hi = _HAIR_RGB[name]
    return _mix(lo, hi, tone)


def _draw_person(cv: _Canvas, p: FaceParams, a: Mapping[str, int]) -> None:
    hair_name = _hair_name(a)
    hair = _hair_colour(hair_name, p.hair_tone)
    hair_dark = _mul(hair, 0.72)
    skin = p.skin
    shade = lambda f: _mul(skin, f)  # noqa: E731
    outline, k = _face_outline(p)
    hw, top, chin = k["hw"], k["top"], k["chin"]
    vol = p.hair_volume
    head_cy = _EYE_Y - 0.04
    head_rx = hw + 0.018 + vol
    head_ry = head_cy - (top - vol)
    person = ("alpha",)

    # --- clothing, neck
    neck_w = hw * 0.52
    cv.polygon([(_CX - neck_w, chin - 0.12), (_CX + neck_w, chin - 0.12), (_CX + neck_w * 1.1, 1.05),
                (_CX - neck_w * 1.1, 1.05)], fill=shade(0.86), mask=person)
    sh_y = chin + 0.1
    cv.polygon([(_CX - 0.45, 1.05), (_CX - 0.42, sh_y + 0.06), (_CX - 0.25, sh_y), (_CX + 0.25, sh_y),
                (_CX + 0.42, sh_y + 0.06), (_CX + 0.45, 1.05)], fill=p.clothing, mask=person)
    if p.neckline == 1:
        cv.polygon([(_CX - neck_w * 1.05, sh_y - 0.005), (_CX + neck_w * 1.05, sh_y - 0.005), (_CX, sh_y + 0.09)],
                   fill=shade(0.86))
    elif p.neckline == 2:
        col = _mul(p.clothing, 1.25)
        cv.polygon([(_CX - neck_w * 1.2, sh_y - 0.01), (_CX, sh_y + 0.06), (_CX - 0.14, sh_y + 0.06)], fill=col)
        cv.polygon([(_CX + neck_w * 1.2, sh_y - 0.01), (_CX, sh_y + 0.06), (_CX + 0.14, sh_y + 0.06)], fill=col)
    else:
        cv.ellipse(_CX, sh_y - 0.005, neck_w * 1.15, 0.03, fill=shade(0.86))
    # shadow of the chin on the neck
    cv.ellipse(_CX, chin - 0.005, neck_w * 1.05, 0.04, fill=(0, 0, 0, 70))

    # --- back hair (behind the head)
    hm = ("hair", "alpha")
    cv.ellipse(_CX, head_cy, head_rx, head_ry, fill=hair_dark, mask=hm)
    if p.hair_style >= 1:
        bottom = _MOUTH_Y + 0.04 if p.hair_style == 1 else 1.02
        wide = head_rx + (0.0 if p.hair_style == 1 else 0.03)
        cv.polygon([(_CX - head_rx, head_cy), (_CX + head_rx, head_cy), (_CX + wide, bottom - 0.04),
                    (_CX + wide - 0.05, bottom), (_CX - wide + 0.05, bottom), (_CX - wide, bottom - 0.04)],
                   fill=hair_dark, mask=hm)

    # --- ears
    ear_y = _EYE_Y + 0.045
    for s in (-1, 1):
        ex = _CX + s * (hw - 0.005)
        cv.ellipse(ex, ear_y, 0.028, 0.055, fill=shade(0.9), mask=("alpha", "face"), erase=("hair",))
        cv.ellipse(ex + s * 0.006, ear_y, 0.012, 0.035, fill=shade(0.72))

    # --- face
    cv.polygon(outline, fill=shade(0.86), mask=("alpha", "face"), erase=("hair",))
    inner = [(_CX + (x - _CX) * 0.93, top + (y - top) * 0.985) for x, y in outline]
    cv.polygon(inner, fill=shade(0.94))
    inner2 = [(_CX + (x - _CX) * 0.8, top + 0.02 + (y - top - 0.02) * 0.95) for x, y in outline]
    cv.polygon(inner2, fill=skin)
    # lighting side shadow on the face
    side = 1 if math.cos(p.light_angle) < 0 else -1
    cv.ellipse(_CX + side * hw * 0.75, _EYE_Y + 0.08, hw * 0.35, 0.2, fill=(0, 0, 0, 22))
    # cheek shading under the cheekbones
    for s in (-1, 1):
        cv.ellipse(_CX + s * hw * 0.72, _EYE_Y + 0.14, hw * 0.22, 0.06, fill=(0, 0, 0, 16))
        cv.ellipse(_CX + s * hw * 0.55, _EYE_Y + 0.09, hw * 0.3, 0.05, fill=(255, 235, 225, 10))
    # forehead highlight
    cv.ellipse(_CX, _EYE_Y - 0.15, hw * 0.5, 0.06, fill=(255, 255, 255, 16))
    # chin shadow / highlight
    cv.ellipse(_CX, chin - 0.045, p.chin_w + 0.035, 0.022, fill=(255, 255, 255, 14))
    cv.ellipse(_CX, _MOUTH_Y + 0.06, 0.04, 0.012, fill=(0, 0, 0, 22))

    # --- eyes: sockets, sclera, iris, lids, brows (drawn with a small offset so that dlib's
    # 5-point eye-corner midpoints land on the template eye centres, see docs/synth.md)
    es = p.eye_size
    erx, ery = 0.047 * es, 0.021 * es
    brow_col = _mul(skin, p.brow_dark)
    ey = _EYE_Y + _EYE_DRAW_DY
    # temples and the sides of the nose bridge a little darker: the eye band reads as a dark band
    cv.ellipse(_CX, ey - 0.01, hw * 0.95, 0.055, fill=(0, 0, 0, 14))
    cv.polygon([(_CX - 0.012, ey - 0.05), (_CX + 0.012, ey - 0.05), (_CX + 0.014, _NOSE_DRAW_Y - 0.03),
                (_CX - 0.014, _NOSE_DRAW_Y - 0.03)], fill=(255, 255, 255, 44))
    for s in (-1, 1):
        ex = _CX + s * (_EYE_DX + _EYE_DRAW_DX)
        # eye socket shadow (above and around the eye)
        cv.ellipse(ex - s * 0.004, ey - 0.014, erx * 1.6, ery * 2.7, fill=(0, 0, 0, 40))
        cv.ellipse(ex, ey - 0.004, erx * 1.3, ery * 1.9, fill=(0, 0, 0, 42))
        # cheek highlight under the eye
        cv.ellipse(ex + s * 0.008, ey + 0.07, erx * 1.2, 0.034, fill=(255, 255, 255, 14))
        cv.ellipse(ex + s * 0.008, ey + 0.07, erx * 0.8, 0.022, fill=(255, 255, 255, 14))
        # sclera: almond made of two arcs
        top_arc = _arc(ex, ey + ery * 0.35, erx, ery * 1.35, 180, 360, 14)
        bot_arc = _arc(ex, ey - ery * 0.35, erx, ery * 1.1, 0, 180, 14)
        cv.polygon(top_arc + bot_arc, fill=(214, 208, 200))
        cv.ellipse(ex, ey, ery * 1.0, ery * 1.0, fill=p.iris)
        cv.ellipse(ex, ey, ery * 0.48, ery * 0.48, fill=(10, 8, 8))
        cv.ellipse(ex + 0.005, ey - 0.006, ery * 0.2, ery * 0.2, fill=(255, 255, 255, 200))
        cv.line(top_arc, 0.01, fill=(22, 16, 14))
        cv.line(bot_arc, 0.005, fill=_mul(skin, 0.55, 210))
        # brow
        by = ey - 0.064
        brow = [(_CX + s * 0.03, by + 0.008), (_CX + s * 0.06, by - 0.008), (ex + s * 0.04, by - 0.006),
                (ex + s * 0.07, by + 0.012)]
        cv.line(brow, p.brow_thick * 1.3, fill=brow_col)
        cv.line(brow[:3], p.brow_thick * 1.7, fill=brow_col)

    # --- nose: side shadows, tip highlight, nostrils, shadow under the base
    nw = p.nose_w
    nb = _NOSE_DRAW_Y
    for s in (-1, 1):
        a_sh = 38 if s == side else 22
        cv.polygon([(_CX + s * 0.014, ey + 0.005), (_CX + s * nw * 0.75, nb - 0.03), (_CX + s * nw * 1.05, nb - 0.004),
                    (_CX + s * nw * 0.5, nb + 0.004), (_CX + s * 0.006, nb - 0.03), (_CX + s * 0.006, ey + 0.005)],
                   fill=(0, 0, 0, a_sh))
    cv.ellipse(_CX, nb - 0.02, nw * 0.5, 0.018, fill=(255, 255, 255, 48))
    for s in (-1, 1):
        cv.ellipse(_CX + s * nw * 0.45, nb - 0.003, nw * 0.3, 0.01, fill=_mul(skin, 0.35))
        cv.ellipse(_CX + s * nw * 0.95, nb - 0.01, nw * 0.25, 0.018, fill=(0, 0, 0, 28))
    cv.ellipse(_CX, nb + 0.012, nw * 0.85, 0.01, fill=(0, 0, 0, 40))

    # --- masks of regions whose contents depend on attributes (always marked)
    mw = p.mouth_w
    cv.ellipse(_MOUTH_X, _MOUTH_Y + 0.01, mw + 0.025, 0.05, mask=("mouth",))
    beard_poly = _beard_polygon(p, outline, k)
    cv.polygon(beard_poly, mask=("beard",))
    age_lines = _age_lines(p, outline, k)
    for pts, w in age_lines:
        cv.line(pts, w, mask=("age",), mask_width=w + 0.03, min_px=1.1)
    glasses = _glasses_shapes(p, hw)
    for kind, args in glasses["mask"]:
        if kind == "polygon":
            cv.polygon(args, mask=("eyeglasses",))
        else:
            cv.line(args[0], args[1], mask=("eyeglasses",), mask_width=args[1] + 0.02, min_px=1.4)

    # --- age cues
    if not a["Young"]:
        amt = p.age_amount
        for pts, w in age_lines:
            cv.line(pts, w, fill=_mul(skin, 0.42, int(190 * amt)), min_px=1.1)
        # eye bags and jowl shading
        for s in (-1, 1):
            cv.ellipse(_CX + s * _EYE_DX, _EYE_Y + 0.036, erx * 0.95, 0.014, fill=(60, 30, 40, int(60 * amt)))

    # --- beard
    if a["Beard"]:
        bc = _mul(hair, 0.8) if hair_name != "Gray_Hair" else _mul(hair, 0.95)
        cv.polygon(beard_poly, fill=(*bc, 205))
        cv.polygon([(_CX + (x - _CX) * 0.97, y + 0.006) for x, y in beard_poly], fill=(*_mul(bc, 0.85), 120))

    # --- mouth
    mx, my = _MOUTH_X, _MOUTH_Y
    if a["Smiling"]:
        w = mw * 1.12
        upper = _arc(mx, my + 0.002, w, 0.014, 180, 360, 14)
        lower = _arc(mx, my - 0.004, w, 0.052, 0, 180, 16)
        cv.polygon(upper + lower, fill=p.lip)
        inner_up = _arc(mx, my + 0.002, w * 0.88, 0.007, 180, 360, 12)
        inner_lo = _arc(mx, my, w * 0.88, 0.04, 0, 180, 14)
        cv.polygon(inner_up + inner_lo, fill=(55, 12, 18))
        teeth_lo = _arc(mx, my + 0.001, w * 0.84, 0.022, 0, 180, 12)
        cv.polygon(inner_up + teeth_lo, fill=(244, 242, 236))
        # dimples: short outward arcs at the mouth corners
        for s in (-1, 1):
            a0, a1 = (-90, 90) if s > 0 else (90, 270)
            cv.line(_arc(mx + s * (w + 0.004), my - 0.006, 0.012, 0.02, a0, a1, 6), 0.006, fill=(0, 0, 0, 50))
    else:
        upper = _arc(mx, my + 0.002, mw, 0.017, 180, 360, 14)
        lower = _arc(mx, my - 0.002, mw * 0.95, 0.022, 0, 180, 14)
        cv.polygon(upper, fill=_mul(p.lip, 0.92))
        cv.polygon(lower, fill=p.lip)
        cv.line([(mx - mw, my), (mx - mw * 0.4, my + 0.003), (mx + mw * 0.4, my + 0.003), (mx + mw, my)], 0.009,
                fill=_mul(p.lip, 0.3))
        cv.ellipse(mx, my + 0.014, mw * 0.45, 0.006, fill=(255, 255, 255, 30))
    cv.ellipse(mx, my + 0.04, mw * 0.6, 0.01, fill=(0, 0, 0, 20))

    # --- front hair (covers the forehead top)
    hl = _EYE_Y - (0.215 - 0.06 * p.hairline) * p.face_h
    if p.bangs:
        hl = _EYE_Y - 0.115
    temple_y = _EYE_Y - 0.06
    front = _arc(_CX, head_cy, head_rx, head_ry, 180 + 8, 360 - 8, 20)
    hairline = []
    for x in np.linspace(_CX + hw * 0.98, _CX - hw * 0.98, 17):
        d = abs(x - (_CX + p.part)) / (hw + abs(p.part))
        y = hl + (temple_y - hl) * min(1.0, d) ** 2.4
        if p.bangs:
            y += 0.012 * math.sin(x * 90)
        hairline.append((x, y))
    cv.polygon(front + hairline + [front[0]], fill=hair, mask=("hair", "alpha"), erase=("face", "age"))
    # sideburns
    for s in (-1, 1):
        x0 = _CX + s * hw * 0.98
        cv.polygon([(x0, temple_y - 0.02), (x0 - s * 0.03, temple_y), (x0 - s * 0.012, _EYE_Y + 0.05),
                    (x0 + s * 0.004, _EYE_Y + 0.05)], fill=hair, mask=("hair", "alpha"), erase=("face", "age"))
    # sheen and parting shadow
    cv.ellipse(_CX - 0.05, head_cy - head_ry * 0.62, head_rx * 0.45, head_ry * 0.12, fill=(255, 255, 255, 26))
    cv.line([(_CX + p.part, head_cy - head_ry), (_CX + p.part * 1.2, hl + 0.01)], 0.006, fill=(0, 0, 0, 45))

    # --- glasses (on top)
    if a["Eyeglasses"]:
        for pts in glasses["lens"]:
            cv.polygon(pts, fill=(*p.lens_tint, 45))
            x0 = min(x for x, _ in pts)
            x1 = max(x for x, _ in pts)
            y0 = min(y for _, y in pts)
            cv.line([(x0 + (x1 - x0) * 0.25, y0 + 0.02), (x0 + (x1 - x0) * 0.45, y0 + 0.006)], 0.008,
                    fill=(255, 255, 255, 100))
        for pts, w in glasses["lines"]:
            cv.line(pts, w, fill=p.frame, min_px=1.4)


def _beard_polygon(p: FaceParams, outline, k) -> list[tuple[float, float]]:
    mx, my, mw = _MOUTH_X, _MOUTH_Y, p.mouth_w
    chin = k["chin"]
    nb = _NOSE_DRAW_Y
    mous = [(mx + mw + 0.012, my + 0.004), (mx + mw * 0.6, nb + 0.02), (mx, nb + 0.014), (mx - mw * 0.6, nb + 0.02),
            (mx - mw - 0.012, my + 0.004)]
    if p.beard_style == 1:  # goatee + moustache
        lo = _arc(mx, my + 0.01, mw + 0.016, chin - my + 0.0, 0, 180, 14)
        return lo + list(reversed(mous))
    start_y = _EYE_Y + 0.06
    right = [(x, y) for x, y in outline if x >= _CX and y >= start_y]
    right = [(_CX + (x - _CX) * 1.01, y + 0.006) for x, y in right]
    left = [(2 * _CX - x, y) for x, y in reversed(right)]
    lower = right + left  # right side top -> chin, then left side chin -> top
    hw_cheek = _half_width_at(outline, start_y + 0.05)
    if p.beard_style == 0:  # full beard: cheek line from sideburn to the mouth corners
        inner = [(_CX - hw_cheek * 0.62, my - 0.045), (mx - mw - 0.01, my - 0.015)] + mous[::-1][1:-1] + \
                [(mx + mw + 0.01, my - 0.015), (_CX + hw_cheek * 0.62, my - 0.045)]
    else:  # chin strap: narrow band along the jaw plus moustache
        inner = [(_CX - hw_cheek * 0.8, start_y + 0.06), (mx - mw - 0.02, my + 0.04), (mx, my + 0.05),
                 (mx + mw + 0.02, my + 0.04), (_CX + hw_cheek * 0.8, start_y + 0.06)]
    return lower + inner


def _age_lines(p: FaceParams, outline, k) -> list[tuple[list[tuple[float, float]], float]]:
    out: list[tuple[list[tuple[float, float]], float]] = []
    w = 0.008  # thin at large sizes; render draws at least 1.1 output pixels
    mx, my, mw = _MOUTH_X, _MOUTH_Y, p.mouth_w
    # forehead lines
    for i, dy in enumerate((0.1, 0.13, 0.16)):
        y = _EYE_Y - dy
        half = 0.065 + 0.01 * i
        out.append((_arc(_CX, y + 0.03, half, 0.03, 200, 340, 10), w * 0.9))
    # nasolabial folds
    for s in (-1, 1):
        out.append(([(_CX + s * p.nose_w * 1.05, _NOSE_DRAW_Y - 0.012), (_CX + s * (mw + 0.01), my - 0.03),
                     (_CX + s * (mw + 0.022), my + 0.005), (_CX + s * (mw + 0.026), my + 0.035)], w * 1.1))
        # eye bags
        ex = _CX + s * _EYE_DX
        out.append((_arc(ex, _EYE_Y + 0.01, 0.04 * p.eye_size, 0.03, 30, 150, 10), w * 0.85))
        # crow's feet
        ox = ex + s * 0.055
        for dy in (-0.012, 0.004, 0.018):
            out.append(([(ox, _EYE_Y + dy * 0.5), (ox + s * 0.022, _EYE_Y + dy)], w * 0.7))
        # jowls / marionette lines
        out.append(([(_CX + s * (mw + 0.005), my + 0.03), (_CX + s * (mw + 0.012), my + 0.075)], w * 0.9))
        hx = _half_width_at(outline, my + 0.03)
        out.append((_arc(_CX + s * (hx - 0.03), my + 0.04, 0.03, 0.03, 60 if s > 0 else 30, 120 if s > 0 else 90, 6),
                    w * 0.9))
    return out


def _glasses_shapes(p: FaceParams, hw: float) -> dict[str, Any]:
    lenses = []
    style = p.glasses_style
    for s in (-1, 1):
        ex = _CX + s * _EYE_DX
        if style == 0:
            pts = _arc(ex, _EYE_Y + 0.004, 0.054, 0.05, 0, 360, 28)
        elif style == 1:
            rx, ry = 0.062, 0.04
            pts = []
            for t in np.radians(np.linspace(0, 360, 32, endpoint=False)):
                c, sn = math.cos(t), math.sin(t)
                pts.append((ex + rx * np.sign(c) * abs(c) ** 0.4, _EYE_Y + 0.006 + ry * np.sign(sn) * abs(sn) ** 0.4))
        else:
            pts = []
            for t in np.radians(np.linspace(0, 360, 32, endpoint=False)):
                c, sn = math.cos(t), math.sin(t)
                ry = 0.046 if sn > 0 else 0.036
                pts.append((ex + 0.062 * c, _EYE_Y + 0.008 + ry * sn + (0.012 * c * s if sn > 0 else 0)))
        lenses.append(pts)
    fw = p.frame_w
    lines: list[tuple[list[tuple[float, float]], float]] = [(pts + [pts[0]], fw) for pts in lenses]
    inner_l = max(x for x, _ in lenses[0])
    inner_r = min(x for x, _ in lenses[1])
    by = _EYE_Y - 0.012
    lines.append(([(inner_l, by), (_CX, by - 0.006), (inner_r, by)], fw * 0.9))
    for s, pts in ((-1, lenses[0]), (1, lenses[1])):
        outer = min(x for x, _ in pts) if s < 0 else max(x for x, _ in pts)
        lines.append(([(outer, _EYE_Y - 0.01), (_CX + s * (hw + 0.004), _EYE_Y + 0.005)], fw * 0.9))
    mask: list[tuple[str, Any]] = [("polygon", pts) for pts in lenses] + [("line", (pts, w)) for pts, w in lines]
    return {"lens": lenses, "lines": lines, "mask": mask}


# ---------------------------------------------------------------------------------- background
def _background(p: FaceParams, size: int, rng: np.random.Generator) -> np.ndarray:
    """(size, size, 3) float32 background in 0..255."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    a = np.asarray(p.bg_a, np.float32)
    b = np.asarray(p.bg_b, np.float32)
    ca, sa = math.cos(p.bg_angle), math.sin(p.bg_angle)
    proj = (xx - 0.5) * ca + (yy - 0.5) * sa + 0.5
    kind = p.bg_kind
    if kind == 0:
        t = np.clip(proj, 0, 1)
    elif kind == 1:
        t = np.clip(np.hypot(xx - 0.5 - 0.3 * ca, yy - 0.5 - 0.3 * sa) * 1.4, 0, 1)
    elif kind == 2:
        t = 0.5 + 0.5 * np.sin(proj * p.bg_freq * 2 * math.pi)
        t = 0.35 * t + 0.65 * np.clip(proj, 0, 1)
    elif kind == 3:
        n = 5
        low = rng.uniform(0, 1, (n, n)).astype(np.float32)
        t = np.asarray(Image.fromarray((low * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC),
                       np.float32) / 255.0
    else:
        horizon = 0.55 + 0.25 * sa
        t = np.where(yy > horizon, 0.85, 0.15 + 0.1 * xx).astype(np.float32)
    img = a[None, None, :] * (1 - t[..., None]) + b[None, None, :] * t[..., None]
    # fine texture
    tex = rng.normal(0, 1, (size, size)).astype(np.float32)
    img *= (1 + 0.03 * tex)[..., None]
    return img


# ------------------------------------------------------------------------------------ rendering
def _render_layers(
    params: FaceParams, attributes: Mapping[str, int], size: int, supersample: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Person layer: (premultiplied colour float32 (size, size, 3) in 0..255, coverage (size, size, 7)).

    Coverage channels: alpha (person), hair, face, beard, mouth, eyeglasses, age (0..1).
    """
    if supersample is None:
        supersample = 4 if size <= 128 else (3 if size <= 256 else 2)
    k = supersample
    side = size * k
    cv = _Canvas(side, _pose_matrix(params), k)
    _draw_person(cv, params, attributes)

    # box-filter downscale (anti-aliasing); colour is premultiplied by the person's coverage
    rgb = np.asarray(cv.img.reduce(k), np.float32)
    names = ("alpha", "hair", "face", "beard", "mouth", "eyeglasses")
    packs = [Image.merge("RGB", [cv.masks[n] for n in names[i:i + 3]]).reduce(k) for i in (0, 3)]
    mk = np.concatenate([np.asarray(packs[0]), np.asarray(packs[1]),
                         np.asarray(cv.masks["age"].reduce(k))[..., None]], axis=2)
    mk = mk.astype(np.float32) / 255.0

    # hair strand texture and beard stubble (inside their regions, same for every attribute value)
    rng = np.random.default_rng([params.seed, 1])
    streak = rng.normal(0, 1, (size + 8, size)).astype(np.float32)
    streak = np.cumsum(streak, axis=0)
    streak = (streak[8:] - streak[:-8]) / math.sqrt(8)
    rgb *= (1 + 0.07 * streak * mk[..., 1])[..., None]
    if attributes["Beard"]:
        speck = rng.normal(0, 1, (size, size)).astype(np.float32)
        rgb *= (1 + 0.1 * speck * mk[..., 3])[..., None]
    return rgb, mk


def _lighting(params: FaceParams, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy /= max(h - 1, 1)
    xx /= max(w - 1, 1)
    g = (xx - 0.5) * math.cos(params.light_angle) + (yy - 0.5) * math.sin(params.light_angle)
    return 1 + 2 * params.light_strength * g


def _masks_from_coverage(mk: np.ndarray) -> dict[str, np.ndarray]:
    thr = 0.02  # any visible coverage: every pixel an attribute can change is inside its mask
    masks = {
        "hair": mk[..., 1] > thr,
        "face": mk[..., 2] > 0.5,
        "beard": mk[..., 3] > thr,
        "mouth": mk[..., 4] > thr,
        "eyeglasses": mk[..., 5] > thr,
        "age": mk[..., 6] > thr,
        "background": mk[..., 0] < 0.5,
    }
    return {n: masks[n] for n in MASK_NAMES}


def render_face(
    params: FaceParams, attributes: Mapping[str, int], size: int = 64, supersample: int | None = None
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Render one face: ``(image uint8 (size, size, 3) RGB, masks {name: bool (size, size)})``.

    Pure function of ``params`` and ``attributes`` (same inputs give the same bytes). The
    masks (:data:`MASK_NAMES`) mark where each attribute is drawn *or would be drawn*, so they are
    the same for every attribute setting of the same params; ``face`` is the visible skin of the
    face and ears, ``background`` the pixels not covered by the person. ``supersample`` (default
    4 up to 128 px, 3 up to 256, else 2) is the anti-aliasing factor.

    >>> p = sample_params(np.random.default_rng(3))
    >>> a = sample_attributes(np.random.default_rng(3))
    >>> bool((render_face(p, a, 32)[0] == render_face(p, a, 32)[0]).all())
    True
    """
    if isinstance(params, Mapping):
        params = FaceParams(**params)
    rgb, mk = _render_layers(params, attributes, size, supersample)
    alpha = mk[..., 0:1]
    bg = _background(params, size, np.random.default_rng([params.seed, 2]))
    img = rgb + bg * (1 - alpha)
    # lighting gradient and sensor noise (whole image)
    img *= _lighting(params, size, size)[..., None]
    img += np.random.default_rng([params.seed, 3]).normal(0, params.noise, img.shape).astype(np.float32)
    out = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    return out, _masks_from_coverage(mk)


#: factor -> masks inside which a change of that factor may alter pixels
_FACTOR_MASKS = {
    "hair": ("hair", "beard"),
    "Eyeglasses": ("eyeglasses",),
    "Smiling": ("mouth",),
    "Beard": ("beard",),
    "Young": ("age",),
}


def changed_region(masks: Mapping[str, np.ndarray], source: Mapping[str, int], target: Mapping[str, int]) -> np.ndarray:
    """Bool mask of the pixels that may differ between renders with ``source`` and ``target``.

    A hair colour change also recolours the beard (beard colour follows hair colour).
    """
    shape = next(iter(masks.values())).shape
    out = np.zeros(shape, bool)
    for f in changed_factors(source, target):
        for name in _FACTOR_MASKS[f]:
            out |= np.asarray(masks[name], bool)
    return out


# --------------------------------------------------------------------------------------- judges
def _to_uint8_nhwc(images: Any) -> np.ndarray:
    if hasattr(images, "detach"):  # torch tensor (N,3,H,W) float in [0,1]
        arr = images.detach().cpu().float().numpy()
        if arr.ndim == 3:
            arr = arr[None]
        if arr.shape[1] == 3 and arr.shape[-1] != 3:
            arr = arr.transpose(0, 2, 3, 1)
        return np.clip(arr * 255.0 + 0.5, 0, 255).astype(np.uint8)
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.dtype != np.uint8:
        if arr.shape[1] == 3 and arr.shape[-1] != 3:
            arr = arr.transpose(0, 2, 3, 1)
        arr = np.clip(arr.astype(np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return arr


_LUM = np.array([0.299, 0.587, 0.114], np.float32)


def _erode(m: np.ndarray) -> np.ndarray:
    out = m.copy()
    out[1:] &= m[:-1]
    out[:-1] &= m[1:]
    out[:, 1:] &= m[:, :-1]
    out[:, :-1] &= m[:, 1:]
    return out


def _dilate(m: np.ndarray) -> np.ndarray:
    return ~_erode(~m)


def _frac(x: np.ndarray) -> float:
    return float(np.mean(x)) if x.size else 0.0


def _features(im: np.ndarray, m: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Colour/contrast measures of one image (float32 (H, W, 3) in 0..255) inside its masks."""
    h, w = im.shape[:2]
    lum = im @ _LUM
    pad = np.pad(lum, 1, mode="edge")
    nb = sum(pad[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)) / 9.0
    grad = np.abs(pad[1:-1, 2:] - pad[1:-1, :-2]) + np.abs(pad[2:, 1:-1] - pad[:-2, 1:-1])
    others = m["eyeglasses"] | m["mouth"] | m["beard"] | m["age"] | m["hair"]
    skin_m = m["face"] & ~others
    if skin_m.sum() < 4:
        skin_m = m["face"] if m["face"].sum() >= 4 else ~m["background"]
    skin = np.median(im[skin_m], axis=0) if skin_m.any() else np.full(3, 128, np.float32)
    scale = max(float(skin @ _LUM), 20.0)
    dev = np.abs(im - skin).sum(axis=2) / scale
    dark = (nb - lum) / scale
    skin_grad = float(grad[skin_m].mean()) / scale if skin_m.any() else 0.0
    skin_dark = _frac(dark[skin_m] > 0.05)

    hair = m["hair"] & ~m["eyeglasses"] & ~m["face"]
    if hair.sum() < 4:
        hair = m["hair"]
    hrgb = np.median(im[hair], axis=0) if hair.any() else np.zeros(3, np.float32)
    hl = float(hrgb @ _LUM)
    tot = float(hrgb.sum()) + 1.0
    f_hair = [math.log(hl + 4.0), hrgb[0] / tot, hrgb[1] / tot, (hrgb.max() - hrgb.min()) / (hl + 10.0)]

    g = m["eyeglasses"] & ~m["hair"]
    gm = m["eyeglasses"]
    if gm.any():
        cx = float(np.nonzero(gm)[1].mean())
        cols = np.arange(w)[None, :]
        bridge = g & (np.abs(cols - cx) < max(1.0, 0.035 * w))
    else:
        bridge = g
    band = g & ~_erode(g)
    f_glasses = [_frac(dev[g] > 0.45), min(2.0, float(dev[g].mean())) if g.any() else 0.0,
                 _frac(dev[bridge] > 0.45), _frac(dev[band] > 0.45),
                 (float(grad[g].mean()) / scale if g.any() else 0.0) - skin_grad]

    mo = m["mouth"]
    if mo.any():
        px = im[mo]
        pl = px @ _LUM
        sat = px.max(1) - px.min(1)
        rows = np.nonzero((dev > 0.5) & mo)[0]
        mrows = np.nonzero(mo.any(1))[0]
        extent = (rows.max() - rows.min() + 1) / max(1, len(mrows)) if rows.size else 0.0
        beard_col = hrgb * 0.85
        far = np.abs(px - beard_col).sum(1) > 60
        teeth = (pl > max(scale * 1.05, 140)) & (sat < 70)
        red_dark = (pl < max(scale * 0.6, 40)) & (px[:, 0] > 1.5 * px[:, 1] + 8)
        f_smile = [_frac(dev[mo] > 0.35), _frac(teeth), _frac(pl < scale * 0.45), extent,
                   _frac(teeth & far), _frac(red_dark), math.sqrt(_frac(teeth & far) * _frac(red_dark))]
    else:
        f_smile = [0.0] * 7

    b = m["beard"] & ~m["mouth"]
    if b.sum() >= 2:
        bl = lum[b]
        f_beard = [_frac(dev[b] > 0.35), min(2.0, float(dev[b].mean())), float(bl.std()) / scale,
                   (float(bl.mean()) - scale) / scale]
    else:
        f_beard = [0.0] * 4
    return {"hair_rgb": hrgb, "hair": np.array(f_hair, np.float32), "glasses": np.array(f_glasses, np.float32),
            "smile": np.array(f_smile, np.float32), "beard": np.array(f_beard, np.float32),
            "_dark": dark, "_skin_dark": np.float32(skin_dark), "_skin_grad": np.float32(skin_grad)}


def _age_features(feat: dict[str, Any], m: Mapping[str, np.ndarray], glasses: bool, beard: bool) -> np.ndarray:
    ag = m["age"] & ~m["hair"] & ~m["mouth"]
    if glasses:
        ag &= ~_dilate(m["eyeglasses"])
    if beard:
        ag &= ~_dilate(m["beard"])
    dark = feat["_dark"][ag]
    if dark.size < 3:
        return np.zeros(3, np.float32)
    return np.array([_frac(dark > 0.05) - float(feat["_skin_dark"]), _frac(dark > 0.1),
                     float(np.clip(dark, 0, None).mean())], np.float32)


_JUDGE_SIDE = 64


def _judge_resolution(imgs: np.ndarray, ms: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Bring larger crops to the judges' calibration size (64 px): box-filtered pixels, and a
    mask pixel is set when any covered source pixel is."""
    n, h, w = imgs.shape[:3]
    if max(h, w) <= _JUDGE_SIDE * 1.25:
        return imgs, ms
    f = max(h, w) / _JUDGE_SIDE
    oh, ow = max(8, int(round(h / f))), max(8, int(round(w / f)))
    if h % oh == 0 and w % ow == 0:  # integer factor: exact block pooling
        fy, fx = h // oh, w // ow
        small = imgs.reshape(n, oh, fy, ow, fx, 3).mean(axis=(2, 4))
        out = {k: v.reshape(n, oh, fy, ow, fx).any(axis=(2, 4)) for k, v in ms.items()}
        return small.astype(np.float32), out
    small = np.stack([np.asarray(Image.fromarray(np.clip(im, 0, 255).astype(np.uint8)).resize((ow, oh), Image.BOX),
                                 np.float32) for im in imgs])
    out = {}
    for k, v in ms.items():
        out[k] = np.stack([np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((ow, oh), Image.BOX)) > 0
                           for m in v])
    return small, out


def _logit(x: np.ndarray, wb: tuple[Sequence[float], float]) -> float:
    return float(np.dot(x, wb[0]) + wb[1])


# Calibrated on clean renders of this generator version (seeded, see docs/synth.md): a
# multinomial linear model on the hair colour measures and one linear score per binary attribute.
_HAIR_W = np.array([[-5.0963, -13.931, -11.74, -3.8398], [4.1067, 1.6376, 111.0, 2.2599], [-1.9394, 12.855, 12.922, 3.0963], [0.57344, 21.874, -85.432, 4.6448], [2.3556, -22.435, -26.75, -6.1613]], np.float32)
_HAIR_B = np.array([34.75, -56.411, 0.25368, 10.731, 10.676], np.float32)
_LIN: dict[str, tuple[Sequence[float], float]] = {
    "glasses": ((10.75, 0.55027, 17.745, -27.725, 2.377), 0.97999),
    "smile": ((2.7876, -4.9838, 1.1749, -0.54339, -15.422, -20.387, 72.857), -2.5009),
    "beard": ((8.5299, 6.666, -21.464, 6.8972), -4.876),
    "age": ((29.624, 34.635, -59.223), -6.2493),
}


def measure_scores(images: Any, masks: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Raw per-image measures behind :func:`measure_attributes` (same inputs).

    Returns ``hair_rgb`` (N, 3) median hair colour, ``hair`` (N, 5) colour scores in
    :data:`HAIR_COLOURS` order, and float (N,) scores ``glasses``, ``smile``, ``beard``, ``age``
    (positive means present; ``age`` positive means old). ``_raw`` holds the measure vectors
    behind each score (used to recalibrate the weights after the drawing changes).
    """
    imgs = _to_uint8_nhwc(images).astype(np.float32)
    n = imgs.shape[0]
    ms = {}
    for k in MASK_NAMES:
        v = np.asarray(masks[k], bool).reshape((-1,) + imgs.shape[1:3])
        ms[k] = np.broadcast_to(v, (n,) + imgs.shape[1:3]) if v.shape[0] == 1 else v
    imgs, ms = _judge_resolution(imgs, ms)
    out = {"hair_rgb": np.zeros((n, 3), np.float32), "hair": np.zeros((n, 5), np.float32),
           "glasses": np.zeros(n, np.float32), "smile": np.zeros(n, np.float32),
           "beard": np.zeros(n, np.float32), "age": np.zeros(n, np.float32)}
    raw: dict[str, list] = {k: [] for k in ("hair", "glasses", "smile", "beard", "age")}
    for i in range(n):
        m = {k: v[i] for k, v in ms.items()}
        f = _features(imgs[i], m)
        out["hair_rgb"][i] = f["hair_rgb"]
        out["hair"][i] = _HAIR_W @ f["hair"] + _HAIR_B
        for k in ("glasses", "smile", "beard"):
            out[k][i] = _logit(f[k], _LIN[k])
        fa = _age_features(f, m, out["glasses"][i] > 0, out["beard"][i] > 0)
        out["age"][i] = _logit(fa, _LIN["age"])
        for k in ("hair", "glasses", "smile", "beard"):
            raw[k].append(f[k])
        raw["age"].append(fa)
    out["_raw"] = {k: np.stack(v) if v else np.zeros((0,)) for k, v in raw.items()}  # type: ignore[assignment]
    return out


def measure_attributes(images: Any, masks: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Decide each attribute from pixels inside the region masks (no learned judge).

    ``images``: ``uint8 (N, H, W, 3)`` RGB, or a float tensor/array ``(N, 3, H, W)`` in ``[0, 1]``.
    ``masks``: ``{name: bool (N, H, W) or (H, W)}`` with the keys of :data:`MASK_NAMES`, taken
    from the *source* render (they stay valid after an edit of the same face, so the judge looks
    at the edited pixels where the attribute lives).
    Returns ``{attribute: int64 array (N,) of 0/1}`` for every name in :data:`ATTRIBUTES`;
    exactly one hair colour is 1 per image.

    >>> rng = np.random.default_rng(5)
    >>> p, a = sample_params(rng), sample_attributes(rng)
    >>> img, masks = render_face(p, a, 64)
    >>> sorted(measure_attributes(img[None], masks)) == sorted(ATTRIBUTES)
    True
    """
    s = measure_scores(images, masks)
    best = s["hair"].argmax(1)
    out = {h: (best == j).astype(np.int64) for j, h in enumerate(HAIR_COLOURS)}
    out["Eyeglasses"] = (s["glasses"] > 0).astype(np.int64)
    out["Smiling"] = (s["smile"] > 0).astype(np.int64)
    out["Beard"] = (s["beard"] > 0).astype(np.int64)
    out["Young"] = (s["age"] <= 0).astype(np.int64)
    return {k: out[k] for k in ATTRIBUTES}


def binary_scores(images: Any, masks: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The judge's continuous score of each binary attribute, signed so that ``> 0`` means present
    (``Young``: the negated age score): ``{name: float32 (N,)}`` for :data:`BINARY_ATTRIBUTES`.
    Same inputs as :func:`measure_attributes`; the scores are logits of the judge's calibration.
    """
    s = measure_scores(images, masks)
    return {"Eyeglasses": s["glasses"], "Smiling": s["smile"], "Beard": s["beard"], "Young": -s["age"]}


# ------------------------------------------------------------------------------ dataset writer
def _item_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(index), 0x5EED])


def dataset_item(seed: int, index: int) -> tuple[FaceParams, dict[str, int], dict[str, int]]:
    """(params, source attributes, counterfactual target attributes) of item ``index``."""
    rng = _item_rng(seed, index)
    params = sample_params(rng)
    attrs = sample_attributes(rng)
    target = sample_counterfactual(rng, attrs)
    return params, attrs, target


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _png_bytes(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _write_item(args: tuple[str, int, int, int, bool, int]) -> int:
    """Write the missing files of one item; return how many images were rendered (0-2)."""
    out_dir, seed, index, size, pairs, width = args
    root = Path(out_dir)
    name = f"{index:0{width}d}"
    img_p = root / "images" / f"{name}.png"
    mask_p = root / "masks" / f"{name}.npz"
    pair_p = root / "pairs" / f"{name}.png"
    todo = [not img_p.exists(), not mask_p.exists(), pairs and not pair_p.exists()]
    if not any(todo):
        return 0
    rendered = 0
    params, attrs, target = dataset_item(seed, index)
    if todo[0] or todo[1]:
        img, masks = render_face(params, attrs, size)
        rendered += 1
        if todo[1]:
            buf = io.BytesIO()
            np.savez_compressed(buf, **{k: v.astype(np.uint8) for k, v in masks.items()})
            _atomic_write_bytes(mask_p, buf.getvalue())
        if todo[0]:
            _atomic_write_bytes(img_p, _png_bytes(img))
    if todo[2]:
        img2, _ = render_face(params, target, size)
        rendered += 1
        _atomic_write_bytes(pair_p, _png_bytes(img2))
    return rendered


def _atomic_write_text(path: Path, text: str) -> None:
    _atomic_write_bytes(path, text.encode("utf-8"))


def generate_dataset(
    out_dir: str | Path,
    n: int,
    seed: int = 0,
    size: int = 64,
    pairs: bool = True,
    workers: int | None = None,
    on_item: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Write ``n`` labelled faces (and counterfactual pairs) to ``out_dir``; return a summary.

    Layout (all paths relative to ``out_dir``)::

        dataset.json       seed, n, size, attributes, groups, generator version
        images/000000.png  RGB uint8 face crops (CelebA crop geometry)
        masks/000000.npz   uint8 0/1 masks, one array per name in MASK_NAMES
        labels.csv         file,Black_Hair,...,Young  (0/1)
        landmarks.csv      file,left_eye_x,left_eye_y,right_eye_x,...,mouth_y (pixels)
        pairs/000000.png   same face with the target attributes (pairs=True)
        pairs.csv          file,target_file,<target attributes>

    Item ``i`` depends only on ``(seed, i)``, so the output is the same for any ``workers`` and a
    rerun resumes: finished files are skipped and every file is written atomically. The CSVs are
    written last. The summary has ``images``, ``pairs``, ``rendered`` (images drawn by this call;
    fewer when resuming) and ``seconds``. ``on_item(k)`` is called with the number of items finished so far (including
    skipped ones). ``workers=None`` uses ``min(4, os.cpu_count())`` processes; 0 or 1 runs inline.
    """
    import time

    root = Path(out_dir)
    if n < 0:
        raise InputError(root, "n must be >= 0")
    if size < 16:
        raise InputError(root, f"size must be >= 16, got {size}")
    width = max(6, len(str(max(n - 1, 0))))
    meta = {
        "format": "starcli-synth/1",
        "generator_version": GENERATOR_VERSION,
        "seed": int(seed),
        "n": int(n),
        "size": int(size),
        "pairs": bool(pairs),
        "attributes": list(ATTRIBUTES),
        "groups": GROUPS,
        "masks": list(MASK_NAMES),
        "template": {k: list(v) for k, v in TEMPLATE.items()},
    }
    meta_p = root / "dataset.json"
    if meta_p.exists():
        try:
            old = json.loads(meta_p.read_text())
        except (OSError, ValueError) as e:
            raise InputError(meta_p, f"unreadable ({e}); remove it or choose another folder") from e
        keys = ("seed", "size", "generator_version")
        if any(old.get(k) != meta[k] for k in keys):
            raise InputError(root, "holds a dataset made with other settings "
                                   f"({', '.join(f'{k}={old.get(k)}' for k in keys)}); choose another folder")
    for sub in ("images", "masks") + (("pairs",) if pairs else ()):
        (root / sub).mkdir(parents=True, exist_ok=True)
    _atomic_write_text(meta_p, json.dumps({**meta, "complete": False}, indent=2) + "\n")

    t0 = time.perf_counter()
    jobs = [(str(root), int(seed), i, int(size), bool(pairs), width) for i in range(n)]
    if workers is None:
        workers = min(4, os.cpu_count() or 1)
    done = rendered = 0
    if workers <= 1 or n < 8:
        for job in jobs:
            rendered += _write_item(job)
            done += 1
            if on_item:
                on_item(done)
    else:
        import multiprocessing as mp

        ctx = mp.get_context("spawn" if os.name == "nt" else "fork")
        with ctx.Pool(workers) as pool:
            for r in pool.imap_unordered(_write_item, jobs, chunksize=16):
                rendered += r
                done += 1
                if on_item:
                    on_item(done)

    # CSVs (labels are a function of the seed)
    lab = io.StringIO()
    lm = io.StringIO()
    pr = io.StringIO()
    wl, wm, wp = csv.writer(lab, lineterminator="\n"), csv.writer(lm, lineterminator="\n"), csv.writer(pr, lineterminator="\n")
    wl.writerow(["file", *ATTRIBUTES])
    wm.writerow(["file"] + [f"{k}_{c}" for k in ("left_eye", "right_eye", "nose", "mouth") for c in "xy"])
    wp.writerow(["file", "target_file", *ATTRIBUTES])
    for i in range(n):
        params, attrs, target = dataset_item(seed, i)
        f = f"images/{i:0{width}d}.png"
        wl.writerow([f, *(attrs[a] for a in ATTRIBUTES)])
        pts = face_landmarks(params, size)
        wm.writerow([f] + [f"{v:.3f}" for k in ("left_eye", "right_eye", "nose", "mouth") for v in pts[k]])
        if pairs:
            wp.writerow([f, f"pairs/{i:0{width}d}.png", *(target[a] for a in ATTRIBUTES)])
    _atomic_write_text(root / "labels.csv", lab.getvalue())
    _atomic_write_text(root / "landmarks.csv", lm.getvalue())
    if pairs:
        _atomic_write_text(root / "pairs.csv", pr.getvalue())
    seconds = time.perf_counter() - t0
    _atomic_write_text(meta_p, json.dumps({**meta, "complete": True}, indent=2) + "\n")
    return {"images": n, "pairs": n if pairs else 0, "rendered": rendered, "seconds": seconds, "out_dir": str(root)}


# --------------------------------------------------------------------------------------- scenes
def _scene_background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A plausible backdrop: a room (wall, window, frames, floor) or outdoors (sky, trees, ground)."""
    import colorsys

    def col(h, s, v):
        r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
        return (int(r * 255), int(g * 255), int(b * 255))

    im = Image.new("RGB", (width, height))
    d = ImageDraw.Draw(im, "RGBA")
    W, H = width, height
    if rng.uniform() < 0.6:  # room
        wall = (rng.uniform(0, 1), rng.uniform(0.05, 0.4), rng.uniform(0.55, 0.92))
        for y in range(0, H, 4):
            d.rectangle([0, y, W, y + 4], fill=col(wall[0], wall[1], wall[2] * (0.85 + 0.15 * y / H)))
        floor_y = int(H * rng.uniform(0.65, 0.85))
        d.rectangle([0, floor_y, W, H], fill=col(rng.uniform(0.05, 0.12), rng.uniform(0.3, 0.6), rng.uniform(0.3, 0.6)))
        for x in range(0, W, int(rng.uniform(30, 60))):  # floor boards
            d.line([(x, floor_y), (x - 40, H)], fill=(0, 0, 0, 30), width=2)
        if rng.uniform() < 0.8:  # window
            wx, wy = rng.uniform(0.05, 0.6) * W, rng.uniform(0.05, 0.2) * H
            ww, wh = rng.uniform(0.2, 0.35) * W, rng.uniform(0.3, 0.45) * H
            d.rectangle([wx - 6, wy - 6, wx + ww + 6, wy + wh + 6], fill=(235, 235, 230))
            for i in range(int(wh)):
                d.line([(wx, wy + i), (wx + ww, wy + i)], fill=col(0.58, 0.45 - 0.3 * i / wh, 0.95))
            d.line([(wx + ww / 2, wy), (wx + ww / 2, wy + wh)], fill=(235, 235, 230), width=5)
            d.line([(wx, wy + wh / 2), (wx + ww, wy + wh / 2)], fill=(235, 235, 230), width=5)
        for _ in range(int(rng.integers(1, 4))):  # picture frames, shelves
            fx, fy = rng.uniform(0, 0.9) * W, rng.uniform(0.05, 0.5) * H
            fw, fh = rng.uniform(0.06, 0.18) * W, rng.uniform(0.06, 0.2) * H
            d.rectangle([fx, fy, fx + fw, fy + fh], fill=col(rng.uniform(0, 1), 0.4, 0.3))
            d.rectangle([fx + 5, fy + 5, fx + fw - 5, fy + fh - 5],
                        fill=col(rng.uniform(0, 1), rng.uniform(0.2, 0.7), rng.uniform(0.4, 0.9)))
        if rng.uniform() < 0.6:  # sofa / table
            sx = rng.uniform(-0.1, 0.5) * W
            d.rounded_rectangle([sx, floor_y - 0.18 * H, sx + 0.6 * W, floor_y + 0.08 * H], radius=18,
                                fill=col(rng.uniform(0, 1), rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7)))
    else:  # outdoors
        sky_h = rng.uniform(0.5, 0.7) * H
        for y in range(0, int(sky_h) + 4, 4):
            d.rectangle([0, y, W, y + 4], fill=col(0.58, 0.55 - 0.35 * y / sky_h, 0.75 + 0.2 * y / sky_h))
        d.rectangle([0, sky_h, W, H], fill=col(rng.uniform(0.22, 0.33), rng.uniform(0.4, 0.7), rng.uniform(0.35, 0.6)))
        for _ in range(int(rng.integers(4, 10))):  # trees and bushes
            tx, r = rng.uniform(0, 1) * W, rng.uniform(0.06, 0.16) * W
            ty = sky_h - rng.uniform(0.0, 0.15) * H
            d.rectangle([tx - r * 0.12, ty, tx + r * 0.12, ty + r * 1.2], fill=col(0.08, 0.5, 0.3))
            d.ellipse([tx - r, ty - r * 1.4, tx + r, ty + r * 0.4],
                      fill=col(rng.uniform(0.22, 0.38), rng.uniform(0.4, 0.8), rng.uniform(0.25, 0.55)))
        if rng.uniform() < 0.5:  # path
            d.polygon([(W * 0.45, sky_h), (W * 0.55, sky_h), (W * 0.9, H), (W * 0.1, H)], fill=(170, 160, 140))
    from PIL import ImageFilter

    return im.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(1.0, 3.0))))


def scene_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A room or outdoor backdrop, ``uint8 (height, width, 3)`` RGB (depends only on ``rng``)."""
    return np.asarray(_scene_background(rng, int(width), int(height)))


def render_person(
    params: FaceParams, attributes: Mapping[str, int], size: int
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """The person of :func:`render_face` without background, noise or lighting gradient.

    Returns ``(colour float32 (size, size, 3) in 0..255 premultiplied by alpha, alpha float32
    (size, size) in 0..1, masks)``; composite with ``colour + backdrop * (1 - alpha[..., None])``.
    """
    if isinstance(params, Mapping):
        params = FaceParams(**params)
    rgb, mk = _render_layers(params, attributes, size, None)
    return rgb, mk[..., 0].copy(), _masks_from_coverage(mk)


def compose_scene(
    rng: np.random.Generator, n_faces: int, width: int = 640, height: int = 480,
    face_px: tuple[float, float] = (100.0, 300.0), noise: float | None = None, max_roll: float = 6.0,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """A photo-like scene with ``n_faces`` rendered faces: ``(image uint8 (height, width, 3), faces)``.

    Faces are rendered at a face width in ``face_px`` (pixels, ear to ear), with their hair and
    shoulders, onto a room or outdoor backdrop, side by side without overlapping (fewer faces are
    placed if they do not fit), rolled by at most ``max_roll`` degrees. Each record: ``box`` ``[x0, y0, x1, y1]`` of the face (brows to
    chin, cheek to cheek, pixels), ``landmarks`` ``{left_eye, right_eye, nose, mouth: [x, y]}``
    (scene pixels), ``attributes``, ``crop_size`` and ``crop_origin`` (the square crop in CelebA
    geometry that the face was rendered in, so ``crop_origin + face_landmarks(params, crop_size)``
    are the landmarks), and ``params`` (a dict for ``FaceParams(**params)``).

    >>> img, faces = compose_scene(np.random.default_rng(0), 2, 320, 240, face_px=(60, 90))
    >>> img.shape, len(faces) <= 2
    ((240, 320, 3), True)
    """
    W, H = int(width), int(height)
    scene = np.asarray(_scene_background(rng, W, H), np.float32).copy()
    placed: list[tuple[float, float]] = []  # (x0, x1) of each person's head incl. hair
    faces: list[dict[str, Any]] = []
    for _ in range(int(n_faces)):
        for _attempt in range(30):
            fpx = float(rng.uniform(*face_px))
            params = sample_params(rng)
            params = replace(params, roll=round(float(rng.uniform(-1, 1)) * max_roll, 3))
            attrs = sample_attributes(rng)
            face_frac = 2 * (params.face_w + 0.02) * params.scale
            crop = int(round(fpx / face_frac))
            head = crop * 2 * (params.face_w + 0.09)  # head with hair, generous
            cx = float(rng.uniform(head / 2, max(head / 2 + 1, W - head / 2)))
            if any(not (cx + head / 2 <= a0 or cx - head / 2 >= a1) for a0, a1 in placed):
                continue
            lo = max(-0.2 * crop, H - 1.0 * crop - 0.35 * H)  # hair top may leave the frame
            hi = H - 0.93 * crop  # chin and some neck stay inside
            if hi < lo:
                continue
            y0 = float(rng.uniform(lo, hi))
            break
        else:
            break
        x0 = int(round(cx - crop / 2))
        y0i = int(round(y0))
        rgb, mk = _render_layers(params, attrs, crop, None)
        rgb *= _lighting(params, crop, crop)[..., None]
        # extend the torso (last row of the layer) down to the bottom of the scene
        extra = max(0, H - (y0i + crop))
        if extra:
            rgb = np.concatenate([rgb, np.repeat(rgb[-1:], extra, axis=0)], axis=0)
            mk = np.concatenate([mk, np.repeat(mk[-1:] * np.array([1, 0, 0, 0, 0, 0, 0], np.float32), extra, axis=0)])
        alpha = mk[..., 0]
        # paste the person layer (premultiplied) with clipping to the scene
        sx0, sy0 = max(0, x0), max(0, y0i)
        sx1, sy1 = min(W, x0 + crop), min(H, y0i + rgb.shape[0])
        if sx1 <= sx0 or sy1 <= sy0:
            continue
        cs = (slice(sy0 - y0i, sy1 - y0i), slice(sx0 - x0, sx1 - x0))
        a = alpha[cs][..., None]
        scene[sy0:sy1, sx0:sx1] = rgb[cs] + scene[sy0:sy1, sx0:sx1] * (1 - a)
        placed.append((cx - head / 2, cx + head / 2))
        lm = {k: [v[0] + x0, v[1] + y0i] for k, v in face_landmarks(params, crop).items()}
        fm = mk[..., 2] > 0.5
        ys, xs = np.nonzero(fm)
        eye_y = (lm["left_eye"][1] + lm["right_eye"][1]) / 2
        ie = math.hypot(lm["right_eye"][0] - lm["left_eye"][0], lm["right_eye"][1] - lm["left_eye"][1])
        box = [float(xs.min() + x0), float(eye_y - 0.45 * ie), float(xs.max() + x0 + 1), float(ys.max() + y0i + 1)]
        faces.append({
            "box": [round(v, 2) for v in box],
            "landmarks": {k: [round(v[0], 3), round(v[1], 3)] for k, v in lm.items()},
            "attributes": dict(attrs),
            "crop_size": crop,
            "crop_origin": [x0, y0i],
            "params": asdict(params),
        })
    sigma = float(rng.uniform(1.0, 4.0)) if noise is None else float(noise)
    scene += rng.normal(0, sigma, scene.shape).astype(np.float32)
    return np.clip(scene + 0.5, 0, 255).astype(np.uint8), faces


def generate_scenes(
    out_dir: str | Path, k: int, seed: int = 0, width: int = 640, height: int = 480,
    faces: tuple[int, int] = (1, 3), face_px: tuple[float, float] = (100.0, 300.0),
    on_item: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Write ``k`` scene photos ``scenes/000000.png`` and ``scenes.json`` (face boxes, landmarks,
    attributes per image) to ``out_dir``; return a summary ``{images, faces, seconds}``.

    Scene ``i`` depends only on ``(seed, i)``; finished images are skipped on a rerun.
    """
    import time

    root = Path(out_dir)
    (root / "scenes").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    records = []
    n_faces = 0
    for i in range(int(k)):
        rng = np.random.default_rng([int(seed), i, 0x5CE7E])
        img, recs = compose_scene(rng, int(rng.integers(faces[0], faces[1] + 1)), width, height, face_px)
        name = f"scenes/{i:06d}.png"
        path = root / name
        if not path.exists():
            _atomic_write_bytes(path, _png_bytes(img))
        for r in recs:
            r.pop("params", None)
        records.append({"file": name, "width": int(width), "height": int(height), "faces": recs})
        n_faces += len(recs)
        if on_item:
            on_item(i + 1)
    meta = {"format": "starcli-synth-scenes/1", "generator_version": GENERATOR_VERSION, "seed": int(seed),
            "attributes": list(ATTRIBUTES), "groups": GROUPS, "images": records}
    _atomic_write_text(root / "scenes.json", json.dumps(meta, indent=1) + "\n")
    return {"images": int(k), "faces": n_faces, "seconds": time.perf_counter() - t0, "out_dir": str(root)}
