"""One way to name things: a :class:`Registry` maps names to objects (model builders,
datasets, engines, executors). Adding one is one decorated function or one entry; asking for
an unknown name is one error line that lists the valid ones."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from hwsim.errors import ConfigError, HwsimError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named objects of one kind, in registration order."""

    def __init__(self, kind: str, error: type[HwsimError] = ConfigError):
        self.kind, self.error = kind, error
        self._items: dict[str, T] = {}

    def add(self, name: str, obj: T) -> T:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        self._items[name] = obj
        return obj

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """A decorator: register the function or class under ``name`` (default: its name)."""
        return lambda obj: self.add(name or obj.__name__, obj)

    def check(self, name: str) -> str:
        """``name`` if registered, else the error listing the valid names."""
        if name not in self._items:
            raise self.error(f"unknown {self.kind} {name!r}; choose one of: {', '.join(self)}")
        return name

    def get(self, name: str) -> T:
        return self._items[self.check(name)]

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)
