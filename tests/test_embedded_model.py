"""The embedded default model (synth-64) on freshly generated faces: hair edits work and the
rest of the crop stays nearly unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from starcli import models, synth
from starcli.attributes import parse_settings
from starcli.backends import make_backend
from starcli.translate import FaceTranslator


@pytest.fixture(scope="module")
def embedded():
    return models.load(models.DEFAULT_MODEL)


def _faces(hair: str, count: int = 8, seed: int = 2024):
    """``count`` aligned 64 px faces with ``hair``, their masks, as (N,3,64,64) [0,1]."""
    rng = np.random.default_rng(seed)
    images, hair_masks, other_masks = [], [], []
    for _ in range(count):
        params = synth.sample_params(rng)
        attrs = synth.sample_attributes(rng)
        attrs = {**attrs, **{h: int(h == hair) for h in synth.HAIR_COLOURS}}
        image, masks = synth.render_face(params, attrs, 64)
        images.append(image)
        blond = {**attrs, **{h: int(h == "Blond_Hair") for h in synth.HAIR_COLOURS}}
        changed = synth.changed_region(masks, attrs, blond)
        hair_masks.append(masks["hair"] & changed)
        other_masks.append(~changed)
    crops = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    return crops, np.stack(hair_masks), np.stack(other_masks)


def test_embedded_model_is_the_default_and_self_described(embedded):
    assert models.default_model_name() == "synth-64"
    spec = embedded.spec
    assert spec.image_size == 64 and spec.attributes[:5] == list(synth.HAIR_COLOURS)
    assert embedded.discriminator is not None
    assert spec.license.startswith("MIT") and spec.recipe and spec.provenance


def test_blond_edit_moves_hair_towards_blond_and_keeps_the_rest(embedded):
    crops, hair, outside = _faces("Black_Hair")
    translator = FaceTranslator(embedded, make_backend("cpu", embedded, {"precision": "fp32"}), [parse_settings(["hair=blond"], embedded.spec)])
    edited = translator(crops).outputs[0]
    before = crops.permute(0, 2, 3, 1).numpy()
    after = edited.permute(0, 2, 3, 1).numpy()
    brightness_before = np.mean([before[i][hair[i]].mean() for i in range(len(crops))])
    brightness_after = np.mean([after[i][hair[i]].mean() for i in range(len(crops))])
    assert brightness_after > brightness_before + 0.15, (brightness_before, brightness_after)
    blond_votes = synth.measure_attributes((after * 255).round().astype(np.uint8), _masks_for(crops))
    assert blond_votes["Blond_Hair"].mean() >= 0.75
    outside_change = np.mean([np.abs(after[i] - before[i]).mean(-1)[outside[i]].mean() for i in range(len(crops))])
    assert outside_change < 0.05, outside_change


def _masks_for(crops: torch.Tensor) -> dict[str, np.ndarray]:
    """Re-render the masks of the faces made by ``_faces`` (same seed and order)."""
    rng = np.random.default_rng(2024)
    stacks: dict[str, list[np.ndarray]] = {}
    for _ in range(len(crops)):
        params = synth.sample_params(rng)
        attrs = synth.sample_attributes(rng)
        _, masks = synth.render_face(params, attrs, 64)
        for name, mask in masks.items():
            stacks.setdefault(name, []).append(mask)
    return {name: np.stack(v) for name, v in stacks.items()}


@pytest.mark.parametrize("setting, attribute, target, least", [
    ("eyeglasses", "Eyeglasses", 1, 0.7), ("smiling", "Smiling", 1, 0.7),
    ("no-young", "Young", 0, 0.65),  # shipped stage 8: 12 of 16 faces; stage 7 got 10 (0.625)
])
def test_added_feature_is_seen_by_the_judge_and_masked_mode_keeps_the_rest(embedded, setting, attribute, target, least):
    """The card's masked mode: glasses, a smile or age cues (``no-young``) put on 16 faces without
    them are recognised by the synth judge (held-out eval: see the card), with less change away
    from the edit than StarGAN's direct output."""
    rng = np.random.default_rng(77)
    images, stacks = [], {}
    while len(images) < 16:
        params, attrs = synth.sample_params(rng), synth.sample_attributes(rng)
        if attrs[attribute] == target:
            continue
        image, masks = synth.render_face(params, attrs, 64)
        images.append(image)
        masks["_outside"] = ~synth.changed_region(masks, attrs, {**attrs, attribute: target})
        for name, mask in masks.items():
            stacks.setdefault(name, []).append(mask)
    masks = {k: np.stack(v) for k, v in stacks.items()}
    crops = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    backend = make_backend("cpu", embedded, {"precision": "fp32"})
    edit = [parse_settings([setting], embedded.spec)]
    assert embedded.spec.edit_mode == "masked"
    before = crops.permute(0, 2, 3, 1).numpy()
    outside = {}
    for mode in ("masked", "direct"):
        after = FaceTranslator(embedded, backend, edit, edit_mode=mode)(crops).outputs[0].permute(0, 2, 3, 1).numpy()
        outside[mode] = np.mean([np.abs(after[i] - before[i]).mean(-1)[masks["_outside"][i]].mean() for i in range(16)])
        if mode == "masked":
            votes = synth.measure_attributes((after * 255).round().astype(np.uint8), masks)
            assert (votes[attribute] == target).mean() >= least, votes[attribute]
    assert outside["masked"] < 0.6 * outside["direct"], outside
