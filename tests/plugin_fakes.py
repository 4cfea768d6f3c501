"""Plugin classes that tests register through entry points (see test_plugins.py)."""

from __future__ import annotations

from typing import ClassVar

from starcli.backends import TorchBackend


class FastFakeBackend(TorchBackend):
    name: ClassVar[str] = "fastfake"
    priority: ClassVar[int] = 1000


class UnavailableBackend(TorchBackend):
    name: ClassVar[str] = "nogpu"
    priority: ClassVar[int] = 5000

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return False, "needs a device this machine lacks"
