"""A tiny name -> factory registry (the timm pattern), shared by every pluggable part."""
from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Callable, Generic, Iterator, TypeVar

from robdistill.core.errors import UserError

T = TypeVar("T")


_ABBREVIATIONS = ("e.g.", "i.e.", "et al.", "cf.", "vs.", "Eq.", "Sec.", "Fig.")


def first_sentence(doc: str) -> str:
    """The first sentence of a docstring's first paragraph, whole (its lines joined): what `robdistill
    list` shows of an entry. Abbreviations such as "e.g." and "et al." do not end it."""
    paragraph = " ".join(line.strip() for line in doc.strip().split("\n\n")[0].splitlines())
    for match in re.finditer(r"[.!?](?=\s|$)", paragraph):
        head = paragraph[:match.end()]
        if not head.endswith(_ABBREVIATIONS):
            return head
    return paragraph


class Registry(Generic[T]):
    """Maps names to objects; unknown names raise a one-line :class:`UserError`."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._help: dict[str, str] = {}

    def register(self, name: str, help: str = "", **attributes: object) -> Callable[[T], T]:
        """Register ``obj`` under ``name``; ``attributes`` (properties of the entry, e.g. a student
        method's ``adversarial_inputs``) are set on the object itself."""
        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            for key, value in attributes.items():
                setattr(obj, key, value)
            self._entries[name] = obj
            self._help[name] = help or first_sentence(getattr(obj, "__doc__", None) or "")
            return obj

        return decorator

    @contextmanager
    def override(self, name: str, obj: T, help: str = "") -> Iterator[T]:
        """``obj`` under ``name`` for the ``with`` block only (a new entry, or one standing in for the
        registered one: e.g. a variant objective tried under its usual name), then the entry as it was."""
        missing = object()
        saved = self._entries.get(name, missing), self._help.get(name, missing)
        self._entries[name] = obj
        self._help[name] = help or first_sentence(getattr(obj, "__doc__", None) or "")
        try:
            yield obj
        finally:
            for table, value in zip((self._entries, self._help), saved):
                if value is missing:
                    table.pop(name, None)
                else:
                    table[name] = value  # type: ignore[index]

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UserError(
                f"unknown {self.kind} '{name}'; choose one of: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def describe(self) -> dict[str, str]:
        return {name: self._help[name] for name in self.names()}

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
