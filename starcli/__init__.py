"""starcli: edit face attributes in photos and videos with a StarGAN generator.

Library first: ``starcli.models.load`` gives a model, the stage modules (detect, align,
translate, paste) work on batched tensors, ``starcli.pipeline`` composes them.
Importing starcli is cheap: submodules load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "load_config", "load_model", "list_plugins", "pull_model", "process_paths", "Pipeline", "StarcliError"]

_LAZY = {
    "load_model": ("starcli.models", "load"),
    "pull_model": ("starcli.models", "pull_model"),
    "list_plugins": ("starcli.plugins", "list_plugins"),
    "process_paths": ("starcli.pipeline", "process_paths"),
    "Pipeline": ("starcli.pipeline", "Pipeline"),
    "load_config": ("starcli.config", "load_config"),
    "StarcliError": ("starcli.errors", "StarcliError"),
}

_SUBMODULES = {"models", "plugins", "pipeline", "detect", "align", "paste", "translate", "attributes", "spec", "stargan", "media", "video", "train", "synth", "backends", "errors", "config", "evaluate", "tracking", "data", "augment", "export"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    if name in _SUBMODULES:
        return importlib.import_module(f"starcli.{name}")
    raise AttributeError(f"module 'starcli' has no attribute {name!r}")
