"""Registries: each choice a user makes by name (a pooling, a backbone, a training mode,
...) maps that name to a class or function, so that a new variant is one definition plus
one `@REGISTRY.register("name")` line."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class Registry(dict[str, T]):
    """A dict from name to variant that knows the flag choosing it, for one-line errors.

    `sorted(registry)`, `name in registry` and `registry[name]` behave as for a dict;
    `registry.get_or_raise(name)` raises a ValueError naming the flag and the choices.
    """

    def __init__(self, flag: str):
        super().__init__()
        self.flag = flag

    def register(self, name: str) -> Callable[[T], T]:
        """A decorator that registers its class or function as `name` (once)."""

        def register(variant: T) -> T:
            if name in self:
                raise ValueError(f"{self.flag}: {name!r} is registered twice.")
            self[name] = variant
            return variant

        return register

    def get_or_raise(self, name: str) -> T:
        """The variant registered as `name`; a ValueError names the flag and the choices."""
        if name not in self:
            raise ValueError(f"{self.flag}={name!r}: expected one of {sorted(self)}.")
        return self[name]
