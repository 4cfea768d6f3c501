"""Attribute settings (``--set hair=black --set no-male``) -> target label vectors.

Names match a model's attributes case- and underscore-insensitively, and exclusive groups can
be addressed by their shared suffix: ``hair=black`` <-> ``Black_Hair``.  Targets are relative to
each face's *source* labels: only what was asked changes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .errors import AttributeSpecError
from .spec import ModelSpec

_TRUE = {"1", "true", "yes", "on", "y"}
_FALSE = {"0", "false", "no", "off", "n"}


def _norm(text: str) -> str:
    return re.sub(r"[\s_\-]+", "", text.strip().lower())


@dataclass(frozen=True)
class Group:
    """An exclusive attribute group: ``name`` (e.g. "hair") and ``values`` -> attribute name."""

    name: str
    values: dict[str, str]  # normalised value ("black") -> attribute ("Black_Hair")


def model_groups(spec: ModelSpec) -> list[Group]:
    """The model's exclusive groups with a user-facing group name and value names.

    The group name is the members' common suffix or prefix (``Black_Hair, Blond_Hair`` -> hair);
    otherwise ``group1``, ``group2``...
    """
    groups = []
    for index, members in enumerate(spec.groups, start=1):
        parts = [m.lower().split("_") for m in members]
        if all(len(p) > 1 and p[-1] == parts[0][-1] for p in parts):
            name, values = parts[0][-1], {_norm("_".join(p[:-1])): m for p, m in zip(parts, members)}
        elif all(len(p) > 1 and p[0] == parts[0][0] for p in parts):
            name, values = parts[0][0], {_norm("_".join(p[1:])): m for p, m in zip(parts, members)}
        else:
            name, values = f"group{index}", {_norm(m): m for m in members}
        groups.append(Group(_norm(name), values))
    return groups


def describe_choices(spec: ModelSpec) -> str:
    """One line listing what ``--set`` accepts for this model."""
    groups = model_groups(spec)
    grouped = {a for g in groups for a in g.values.values()}
    items = [f"{g.name}={'|'.join(g.values)}" for g in groups]
    items += [a.lower() for a in spec.attributes if a not in grouped]
    return ", ".join(items) + " (prefix no- or use =false to turn a binary attribute off)"


@dataclass
class Edit:
    """Requested target values: attribute name -> 0/1 (groups resolved to one member set to 1).

    ``apply(source)`` returns target labels: source ``(N, C)`` 0/1 with the requested attributes
    replaced (a group member set to 1 clears the rest of its group).
    """

    spec: ModelSpec
    values: dict[str, int] = field(default_factory=dict)
    settings: list[str] = field(default_factory=list)

    def apply(self, source: Tensor) -> Tensor:
        target = source.clone().float()
        index = {a: i for i, a in enumerate(self.spec.attributes)}
        for group in self.spec.groups:
            if any(self.values.get(a) == 1 for a in group):
                target[:, [index[a] for a in group]] = 0.0
        for attr, value in self.values.items():
            target[:, index[attr]] = float(value)
        return target

    def label(self) -> str:
        """Short text of the edit for file names and reports, e.g. ``hair=black,male``."""
        return ",".join(self.settings) if self.settings else "identity"


def parse_settings(settings: list[str], spec: ModelSpec) -> Edit:
    """Parse ``--set`` values against ``spec``; errors list the valid choices.

    >>> from starcli.stargan import GeneratorConfig
    >>> spec = ModelSpec("m", ["Black_Hair", "Blond_Hair", "Male"], 128, GeneratorConfig(c_dim=3),
    ...                  groups=[["Black_Hair", "Blond_Hair"]])
    >>> parse_settings(["hair=blond", "no-male"], spec).values
    {'Blond_Hair': 1, 'Male': 0}
    """
    groups = model_groups(spec)
    by_norm = {_norm(a): a for a in spec.attributes}
    group_of = {a: g for g in groups for a in g.values.values()}
    values: dict[str, int] = {}
    origin: dict[str, str] = {}

    def assign(attr: str, value: int, text: str) -> None:
        group = group_of.get(attr)
        if group is not None and value == 1:
            for other in group.values.values():
                if other != attr and values.get(other) == 1:
                    raise AttributeSpecError(f"conflicting settings '{origin[other]}' and '{text}': {group.name} can have one value")
        if attr in values and values[attr] != value:
            raise AttributeSpecError(f"conflicting settings '{origin[attr]}' and '{text}' for {attr}")
        values[attr] = value
        origin[attr] = text

    for raw in settings:
        for text in (part for part in raw.split(",") if part.strip()):
            text = text.strip()
            key, _, val = text.partition("=")
            key_n, val_n = _norm(key), val.strip().lower()
            negated = False
            if key_n not in by_norm and not val:  # "no-male", "not_young"; a real No_Beard wins
                for prefix in ("no-", "no_", "not-", "not_"):
                    if key.lower().startswith(prefix):
                        negated, key_n = True, _norm(key[len(prefix) :])
                        break
            group = next((g for g in groups if g.name == key_n), None)
            if group is not None and val:
                member = group.values.get(_norm(val))
                if member is None:
                    raise AttributeSpecError(f"unknown value '{val}' for {group.name} in '{text}': choose one of {', '.join(group.values)}")
                assign(member, 1, text)
                continue
            attr = by_norm.get(key_n)
            if attr is None:
                raise AttributeSpecError(f"unknown attribute '{key}' in '{text}': valid settings are {describe_choices(spec)}")
            if val:
                if val_n in _TRUE:
                    value = 1
                elif val_n in _FALSE:
                    value = 0
                else:
                    raise AttributeSpecError(f"'{text}': value must be true/false/1/0, not '{val}'")
            else:
                value = 0 if negated else 1
            if attr in group_of and value == 0:
                g = group_of[attr]
                raise AttributeSpecError(f"'{text}': {attr} belongs to the exclusive group {g.name}; set another value instead ({g.name}={'|'.join(g.values)})")
            assign(attr, value, text)
    return Edit(spec, values, [s for raw in settings for s in raw.split(",") if s.strip()])


def parse_source(text: str | None, spec: ModelSpec) -> dict[str, int]:
    """Explicit source labels (``--source hair=brown,no-male``) over the card's default.

    Returns a full attribute -> 0/1 mapping.
    """
    base = {a: int(spec.default_source.get(a, 0)) for a in spec.attributes}
    if not text:
        return base
    edit = parse_settings([text], spec)
    source = edit.apply(torch.tensor([[float(base[a]) for a in spec.attributes]]))[0]
    return {a: int(v) for a, v in zip(spec.attributes, source.tolist())}


def labels_from_logits(logits: Tensor, spec: ModelSpec) -> Tensor:
    """Discriminator attribute logits ``(N, C)`` -> 0/1 labels; exclusive groups by argmax."""
    labels = (logits > 0).float()
    index = {a: i for i, a in enumerate(spec.attributes)}
    for group in spec.groups:
        cols = torch.tensor([index[a] for a in group])
        best = logits[:, cols].argmax(dim=1)
        labels[:, cols] = 0.0
        labels[torch.arange(len(logits)), cols[best]] = 1.0
    return labels
