"""Model card: what a StarGAN model translates and how its crops must look.

A :class:`ModelSpec` is stored as ``model.json`` beside the weights of a bundle
(docs/architecture.md).  It is plain data: no pickles, no code.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import ModelError
from .stargan import DiscriminatorConfig, GeneratorConfig, config_dict

CARD_FORMAT = "starcli-model/1"

#: CelebA's aligned-crop geometry as used by the official StarGAN models, in normalised crop
#: units (pixel x = u * S - 0.5 for a crop of side S).  Eyes and mouth come from CelebA's
#: alignment (178x218 frames, centre crop 178); ``nose`` is the dlib 5-point nose base,
#: calibrated on FairFace photos (see the comment in :mod:`starcli.align`).
CELEBA_POINTS: dict[str, tuple[float, float]] = {
    "left_eye": (0.39463, 0.51404),
    "right_eye": (0.60526, 0.51404),
    "nose": (0.50088, 0.68050),
    "mouth": (0.49962, 0.74727),
}


@dataclass(frozen=True)
class CropTemplate:
    """Where canonical landmarks sit in an aligned crop, in normalised units ``[0, 1]``."""

    name: str = "celeba"
    points: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(CELEBA_POINTS))

    def pixels(self, crop_size: int, names: list[str] | None = None) -> list[tuple[float, float]]:
        """Template points in crop pixels for ``names`` (default: all), ``x = u * S - 0.5``.

        >>> [(round(x, 2), round(y, 2)) for x, y in CropTemplate().pixels(178, ["left_eye"])]
        [(69.74, 91.0)]
        """
        names = list(self.points) if names is None else names
        return [(self.points[n][0] * crop_size - 0.5, self.points[n][1] * crop_size - 0.5) for n in names]


@dataclass
class ModelSpec:
    """The model card.

    ``attributes`` are the label names in the generator's label order; ``groups`` lists
    mutually exclusive attributes (one hair colour at a time); ``image_size`` is the crop side in
    pixels; ``default_source`` gives the source labels assumed for a face when no discriminator
    can estimate them.  ``edit_mode`` is how edits are produced by default (``direct``:
    ``G(x, c_trg)`` as in StarGAN; ``difference``: ``x + G(x, c_trg) - G(x, c_src)``;
    ``masked``: ``G(x, c_trg)`` where the edit acts, ``x`` elsewhere; see
    :func:`starcli.translate.edit_crops`).
    """

    name: str
    attributes: list[str]
    image_size: int
    generator: GeneratorConfig
    discriminator: DiscriminatorConfig | None = None
    groups: list[list[str]] = field(default_factory=list)
    template: CropTemplate = field(default_factory=CropTemplate)
    normalization: dict[str, list[float]] = field(
        default_factory=lambda: {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    )
    instance_norm: str = "per_image"
    edit_mode: str = "direct"
    default_source: dict[str, int] = field(default_factory=dict)
    license: str = "unknown"
    provenance: dict[str, Any] = field(default_factory=dict)
    quality: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        if len(self.attributes) != self.generator.c_dim:
            raise ModelError(
                f"model '{self.name}': {len(self.attributes)} attribute names for a generator with "
                f"{self.generator.c_dim} labels"
            )
        if len(set(self.attributes)) != len(self.attributes):
            raise ModelError(f"model '{self.name}': duplicate attribute names {self.attributes}")
        for group in self.groups:
            unknown = [a for a in group if a not in self.attributes]
            if unknown:
                raise ModelError(f"model '{self.name}': group members {unknown} are not attributes")

    # -- card I/O ------------------------------------------------------------------------------
    def to_card(self) -> dict[str, Any]:
        """The JSON-serialisable card."""
        card = asdict(self)
        card["generator"] = config_dict(self.generator)
        card["discriminator"] = config_dict(self.discriminator) if self.discriminator is not None else None
        card["format"] = CARD_FORMAT
        card["template"] = {"name": self.template.name, "points": {k: list(v) for k, v in self.template.points.items()}}
        return card

    @classmethod
    def from_card(cls, card: dict[str, Any], source: str | Path = "model.json") -> ModelSpec:
        """Parse a card dict; errors name ``source``."""
        if card.get("format") != CARD_FORMAT:
            raise ModelError(f"{source}: not a starcli model card (format {card.get('format')!r}, expected {CARD_FORMAT!r})")
        try:
            tpl = card.get("template") or {}
            points = {k: (float(v[0]), float(v[1])) for k, v in (tpl.get("points") or CELEBA_POINTS).items()}
            disc = card.get("discriminator")
            return cls(
                name=str(card["name"]),
                attributes=[str(a) for a in card["attributes"]],
                image_size=int(card["image_size"]),
                generator=GeneratorConfig(**card["generator"]),
                discriminator=DiscriminatorConfig(**disc) if disc else None,
                groups=[list(g) for g in card.get("groups", [])],
                template=CropTemplate(name=str(tpl.get("name", "celeba")), points=points),
                normalization=card.get("normalization") or {"mean": [0.5] * 3, "std": [0.5] * 3},
                instance_norm=str(card.get("instance_norm", "per_image")),
                edit_mode=str(card.get("edit_mode", "direct")),
                default_source={str(k): int(v) for k, v in (card.get("default_source") or {}).items()},
                license=str(card.get("license", "unknown")),
                provenance=dict(card.get("provenance") or {}),
                quality=dict(card.get("quality") or {}),
                recipe=dict(card.get("recipe") or {}),
                description=str(card.get("description", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{source}: invalid model card ({type(exc).__name__}: {exc})") from None

    def save(self, path: Path) -> None:
        """Write the card as JSON to ``path`` (not atomic: bundles write into a temp dir)."""
        path.write_text(json.dumps(self.to_card(), indent=2, sort_keys=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> ModelSpec:
        try:
            card = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(f"{path}: cannot read model card ({exc})") from None
        return cls.from_card(card, path)


def default_groups(attributes: list[str]) -> list[list[str]]:
    """Recognise exclusive groups by shared suffix: ``Black_Hair, Blond_Hair`` -> one hair group.

    >>> default_groups(["Black_Hair", "Blond_Hair", "Male", "Brown_Hair"])
    [['Black_Hair', 'Blond_Hair', 'Brown_Hair']]
    """
    by_suffix: dict[str, list[str]] = {}
    for attr in attributes:
        match = re.fullmatch(r"(.+)_(hair)", attr, flags=re.IGNORECASE)
        if match:
            by_suffix.setdefault(match.group(2).lower(), []).append(attr)
    return [members for members in by_suffix.values() if len(members) > 1]
