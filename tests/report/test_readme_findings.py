"""The README's findings paragraph states only numbers that a results file holds (issue 29): a
number typed by hand, or left behind when a study is regenerated, fails here."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NUMBER = re.compile(r"\d+(?:\.\d+)?")
START, END = "**What it has found so far**", "**How verdicts are read**"


def findings_paragraph(readme: str) -> str:
    start = readme.index(START)
    end = readme.find(END, start)
    return readme[start:end if end > 0 else readme.index("\n## ", start)]


def numbers(text: str) -> set[str]:
    """Every number as written (signs and the Unicode minus dropped: "−4.5" and "+4.5" are "4.5")."""
    return set(NUMBER.findall(text.replace("\u2212", "-")))


def results_numbers() -> set[str]:
    found: set[str] = set()
    for path in sorted((ROOT / "benchmarks" / "results").glob("*")):
        if path.suffix in (".md", ".json"):
            found |= numbers(path.read_text())
    return found


def missing_numbers(findings: str, results: set[str]) -> list[str]:
    return sorted(numbers(findings) - results, key=float)


def test_every_number_of_the_findings_is_in_a_results_file() -> None:
    findings = findings_paragraph((ROOT / "README.md").read_text())
    assert len(numbers(findings)) > 20  # the paragraph was found, and it has its numbers
    missing = missing_numbers(findings, results_numbers())
    assert not missing, f"numbers in the README's findings that no benchmarks/results file holds: {missing}"


def test_the_check_catches_a_number_typed_by_hand() -> None:
    findings = findings_paragraph((ROOT / "README.md").read_text())
    results = results_numbers()
    assert missing_numbers(findings.replace("69.7 [64.9, 74.6]", "69.75 [64.9, 74.6]"), results) == ["69.75"]
    assert missing_numbers(findings + " costs 0.0461 more", results) == ["0.0461"]
