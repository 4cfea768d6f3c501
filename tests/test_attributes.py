"""`--set` parsing against a model's attributes and groups; targets relative to the source."""

from __future__ import annotations

import pytest
import torch

from starcli.attributes import labels_from_logits, parse_settings, parse_source
from starcli.errors import AttributeSpecError
from starcli.spec import ModelSpec
from starcli.stargan import GeneratorConfig

SPEC = ModelSpec(
    "celeba", ["Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young"], 128, GeneratorConfig(),
    groups=[["Black_Hair", "Blond_Hair", "Brown_Hair"]], default_source={"Brown_Hair": 1, "Young": 1},
)


@pytest.mark.parametrize(
    "settings, expected",
    [
        (["hair=black"], {"Black_Hair": 1}),
        (["Hair=Blond", "male"], {"Blond_Hair": 1, "Male": 1}),
        (["black_hair"], {"Black_Hair": 1}),
        (["BlackHair"], {"Black_Hair": 1}),
        (["no-male", "young"], {"Male": 0, "Young": 1}),
        (["male=false", "young=1"], {"Male": 0, "Young": 1}),
        (["hair=brown,no-young"], {"Brown_Hair": 1, "Young": 0}),
    ],
)
def test_settings_match_attributes_and_groups(settings, expected):
    assert parse_settings(settings, SPEC).values == expected


@pytest.mark.parametrize(
    "settings, message",
    [
        (["hat"], "unknown attribute 'hat'.*hair=black|blond|brown, male, young"),
        (["hair=pink"], "unknown value 'pink' for hair.*black, blond, brown"),
        (["hair=black", "hair=blond"], "conflicting settings 'hair=black' and 'hair=blond'"),
        (["male", "no-male"], "conflicting settings 'male' and 'no-male'"),
        (["male=maybe"], "value must be true/false"),
        (["no-black_hair"], "exclusive group hair"),
    ],
)
def test_bad_settings_list_valid_choices(settings, message):
    with pytest.raises(AttributeSpecError, match=message):
        parse_settings(settings, SPEC)


def test_targets_are_relative_to_each_source():
    source = torch.tensor([[1, 0, 0, 1, 1], [0, 0, 1, 0, 0]], dtype=torch.float32)
    target = parse_settings(["hair=blond"], SPEC).apply(source)
    assert target.tolist() == [[0, 1, 0, 1, 1], [0, 1, 0, 0, 0]]
    target = parse_settings(["no-male"], SPEC).apply(source)
    assert target.tolist() == [[1, 0, 0, 0, 1], [0, 0, 1, 0, 0]]


def test_source_defaults_from_card_and_explicit_option():
    assert parse_source(None, SPEC) == {"Black_Hair": 0, "Blond_Hair": 0, "Brown_Hair": 1, "Male": 0, "Young": 1}
    assert parse_source("hair=black,male", SPEC) == {"Black_Hair": 1, "Blond_Hair": 0, "Brown_Hair": 0, "Male": 1, "Young": 1}


def test_critic_logits_to_labels_keep_groups_exclusive():
    logits = torch.tensor([[2.0, 3.0, -1.0, 0.5, -0.5], [-3.0, -2.0, -1.0, -1.0, 1.0]])
    assert labels_from_logits(logits, SPEC).tolist() == [[0, 1, 0, 1, 0], [0, 0, 1, 0, 1]]
