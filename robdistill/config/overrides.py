"""``--set`` overrides, parsed once where they enter (the command line, a baseline file) into typed
values per recipe stage: ``teacher.epochs=2`` -> ``{"teacher": {"epochs": 2}}``. The texts are kept
as given, because run names, logged parameters and sweep names show (and hash) them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping

from robdistill.config.recipes import parse_override
from robdistill.core.errors import UserError

STAGES = ("teacher", "student", "suite")  # the recipes a command's overrides can reach


@dataclass(frozen=True)
class Overrides:
    """Recipe overrides: ``texts`` as given, ``values[stage][field]`` typed (a TOML value, or a bare
    word as a string: :func:`robdistill.config.recipes.parse_override`)."""

    texts: tuple[str, ...] = ()
    values: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @classmethod
    def parse(cls, texts: Iterable[str], stages: Iterable[str] = STAGES, bare: str | None = None) -> "Overrides":
        """Each ``<stage>.<field>=<value>`` of ``texts`` checked and parsed; with ``bare`` (a command
        whose overrides reach one recipe: ``train-teacher``, ``evaluate``), ``<field>=<value>``
        belongs to that stage. A text without a known prefix is a one-line error."""
        texts, stages = tuple(texts), tuple(stages)
        values: dict[str, dict[str, Any]] = {stage: {} for stage in stages}
        for text in texts:
            stage, dot, rest = text.partition(".")
            if bare is not None:
                stage, rest = bare, text
            elif stage not in values or not dot or "=" not in rest:
                raise UserError(f"--set '{text}': prefix the field with one of "
                                f"{', '.join(s + '.' for s in stages)} (e.g. teacher.epochs=2)")
            key, value = parse_override(rest)
            values.setdefault(stage, {})[key] = value
        return cls(texts, values)

    def stage(self, name: str) -> dict[str, Any]:
        """The fields set for one recipe stage (``teacher``, ``student``, ``suite``)."""
        return dict(self.values.get(name, {}))

    def only(self, *stages: str) -> "Overrides":
        """The overrides of ``stages`` alone (their texts too)."""
        keep = tuple(t for t in self.texts if t.partition(".")[0] in stages)
        return Overrides(keep, {s: v for s, v in self.values.items() if s in stages})

    def without(self, stage: str) -> "Overrides":
        """All but ``stage``'s (an external teacher's cells drop ``teacher.*``: it is loaded, not trained)."""
        return self.only(*(s for s in self.values if s != stage))

    def first_text(self, stage: str) -> str | None:
        """The first override given for ``stage``, as typed (for messages)."""
        return next((t for t in self.texts if t.partition(".")[0] == stage), None)

    def __iter__(self) -> Iterator[str]:
        return iter(self.texts)

    def __len__(self) -> int:
        return len(self.texts)
