"""Plugin discovery through Python entry points.

Groups: ``starcli.backends`` (generator backends) and ``starcli.detectors`` (face detectors).
First-party plugins are declared in starcli's own ``pyproject.toml`` exactly as a third party
declares its own.  Discovery is lazy: importing starcli loads no plugin; :func:`get` loads one
and an unknown name raises an error listing the installed names.  A plugin that fails to import
is reported by :func:`list_plugins` and never breaks the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from .errors import PluginError

BACKENDS = "starcli.backends"
DETECTORS = "starcli.detectors"
GROUPS = (BACKENDS, DETECTORS)

#: Extra entry points injected by tests or applications: group -> name -> EntryPoint.
_extra: dict[str, dict[str, EntryPoint]] = {}


def register(group: str, name: str, target: str) -> None:
    """Add an entry point at run time (``target`` is ``"module:Class"``); used by tests/apps."""
    _extra.setdefault(group, {})[name] = EntryPoint(name=name, value=target, group=group)


def unregister(group: str, name: str) -> None:
    _extra.get(group, {}).pop(name, None)


def entry_points_of(group: str) -> dict[str, EntryPoint]:
    """Installed entry points of ``group`` by name (run-time registrations win)."""
    found = {ep.name: ep for ep in entry_points(group=group)}
    found.update(_extra.get(group, {}))
    return dict(sorted(found.items()))


def get(group: str, name: str) -> Any:
    """Load the plugin class ``name`` of ``group``.

    Raises :class:`PluginError` for an unknown name (listing the installed ones) or a plugin
    that fails to import (with the reason).
    """
    eps = entry_points_of(group)
    kind = group.rsplit(".", 1)[-1][:-1]
    if name not in eps:
        raise PluginError(f"unknown {kind} '{name}': installed {group.rsplit('.', 1)[-1]} are {', '.join(eps) or 'none'}")
    try:
        return eps[name].load()
    except Exception as exc:  # a broken third-party plugin must not crash starcli
        raise PluginError(f"{kind} plugin '{name}' ({eps[name].value}) failed to import: {type(exc).__name__}: {exc}") from None


@dataclass
class PluginInfo:
    """What ``starcli plugins`` shows for one plugin."""

    group: str
    name: str
    target: str
    loaded: bool
    available: bool
    reason: str
    distribution: str = ""


def describe(group: str, name: str, ep: EntryPoint) -> PluginInfo:
    """Load one plugin and ask it whether it can run here (``available() -> (bool, reason)``)."""
    dist = getattr(getattr(ep, "dist", None), "name", "") or ""
    try:
        cls = ep.load()
    except Exception as exc:
        return PluginInfo(group, name, ep.value, False, False, f"import failed: {type(exc).__name__}: {exc}", dist)
    try:
        ok, reason = cls.available() if hasattr(cls, "available") else (True, "")
    except Exception as exc:
        ok, reason = False, f"availability check failed: {type(exc).__name__}: {exc}"
    return PluginInfo(group, name, ep.value, True, bool(ok), str(reason), dist)


def list_plugins(groups: tuple[str, ...] = GROUPS) -> list[PluginInfo]:
    """Every installed plugin of ``groups`` with its availability on this machine."""
    return [describe(group, name, ep) for group in groups for name, ep in entry_points_of(group).items()]
