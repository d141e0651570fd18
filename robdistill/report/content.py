"""What a study report says, as plain typed objects: sections of paragraphs, code, tables, figures
and sanity-check lists. :func:`robdistill.report.build.build_report` fills it from the tracking
store; the HTML and Markdown renderers only lay it out, so both always show the same numbers."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from robdistill.analysis.verdicts import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED

# verdict and status words the renderers badge (any other cell text is shown plain); the verdict
# words are defined once, in robdistill.analysis.verdicts
PASSED = "passed"
FAILED = "FAILED"
BADGES = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, PASSED, FAILED)


@dataclass(frozen=True)
class Paragraph:
    """A paragraph of plain text (``code`` spans: text between backticks)."""

    text: str


@dataclass(frozen=True)
class Code:
    """Literal lines: commands, versions."""

    text: str
    caption: str = ""


@dataclass(frozen=True)
class Table:
    """A table of text cells; ``badge_column``: the column whose cells are verdict or status words
    (:data:`BADGES`), shown as badges in HTML."""

    title: str
    header: list[str]
    rows: list[list[str]]
    caption: str = ""
    badge_column: int | None = None


@dataclass(frozen=True)
class Figure:
    """A PNG figure: ``name`` is its file name (Markdown writes it beside the report)."""

    name: str
    title: str
    caption: str
    png: bytes
    compact: bool = False  # one of a series shown side by side


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class EvaluationChecks:
    """The sanity checks (and attack warnings) of one evaluation run."""

    label: str          # e.g. "at / keep / seed 0 (student)"
    run_id: str
    checks: list[Check]
    warnings: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def status(self) -> str:
        return PASSED if self.passed else FAILED

    @property
    def failed(self) -> list[Check]:
        return [check for check in self.checks if not check.passed]

    @property
    def passed_text(self) -> str:
        """``5 / 6``: checks passed of checks run."""
        return f"{sum(check.passed for check in self.checks)} / {len(self.checks)}"

    @property
    def failed_text(self) -> str:
        """The failed checks with their details, ``-`` for none."""
        return "; ".join(f"{check.name} ({check.detail})" for check in self.failed) or "-"


#: the columns of the status table both renderers write, one row per evaluation
CHECK_COLUMNS = ("evaluation", "status", "checks passed", "failed checks", "MLflow run")


@dataclass(frozen=True)
class Checks:
    """Every evaluation's sanity-check status."""

    evaluations: list[EvaluationChecks]

    @property
    def failed(self) -> list[EvaluationChecks]:
        return [e for e in self.evaluations if not e.passed]


Block = Union[Paragraph, Code, Table, Figure, Checks]


@dataclass
class Section:
    id: str       # the anchor: lower-case letters, digits and hyphens
    title: str
    blocks: list[Block] = field(default_factory=list)


@dataclass
class Report:
    title: str
    subtitle: str
    sections: list[Section]

    def figures(self) -> list[Figure]:
        return [block for section in self.sections for block in section.blocks if isinstance(block, Figure)]

    def tables(self) -> list[Table]:
        return [block for section in self.sections for block in section.blocks if isinstance(block, Table)]

    def section(self, section_id: str) -> Section:
        return next(s for s in self.sections if s.id == section_id)
