"""benchmarks/compare_studies.py: two studies' own tables side by side, readings held or changed."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "compare_studies.py"
SUMMARY = "| teacher | perturb | seeds | n | clean | autoattack | worst |\n|---|---|---|---|---|---|---|\n{rows}\n"
PAIRED = ("| teacher | comparison | metric | seeds | difference (points) | reading |\n|---|---|---|---|---|---|\n{rows}\n")


def write(folder: Path, name: str, cells: dict[str, str], readings: dict[str, tuple[str, str]]) -> Path:
    folder.mkdir()
    summary = folder / f"{name}.md"
    summary.write_text("# a study\n\n" + SUMMARY.format(rows="\n".join(
        f"| at | {perturb} | 0,1 | 500 | 90.0 | {value} | {value} |" for perturb, value in cells.items())))
    (folder / f"{name}-paired.md").write_text(PAIRED.format(rows="\n".join(
        f"| at | {comparison} | autoattack | 2 | {difference} | {reading} |"
        for comparison, (difference, reading) in readings.items())))
    return summary


def test_readings_held_changed_and_one_study_only(tmp_path: Path) -> None:
    old = write(tmp_path / "old", "s", {"keep": "40.1 ± 1.0 [30.0, 50.0]", "onehot": "20.0"},
                {"onehot - keep": ("-20.1 [-30, -10]", "lower"), "nonmax-shuffle - keep": ("+1.0 [-5, +7]", "inconclusive")})
    new = write(tmp_path / "new", "t", {"keep": "35.5 ± 0.5 [33.0, 38.0]", "nonmax-flatten": "30.0"},
                {"onehot - keep": ("-18.0 [-19, -17]", "lower"), "nonmax-shuffle - keep": ("-4.0 [-5, -3]", "lower"),
                 "nonmax-flatten - keep": ("-5.5 [-9, -2]", "lower")})
    out = tmp_path / "cmp.md"
    done = subprocess.run([sys.executable, str(SCRIPT), f"cpu={old}", f"full={new}", "--out", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    # numbers copied as the studies printed them, cells of one study named
    assert "| at | keep | autoattack | 0,1, 500 | 40.1 ± 1.0 [30.0, 50.0] | 0,1, 500 | 35.5 ± 0.5 [33.0, 38.0] |" in text
    assert "Cells in one study only: at / nonmax-flatten, at / onehot." in text
    assert "| at | onehot - keep | autoattack | -20.1 [-30, -10] | lower | -18.0 [-19, -17] | lower | held |" in text
    assert "| at | nonmax-shuffle - keep | autoattack | +1.0 [-5, +7] | inconclusive | -4.0 [-5, -3] | lower | changed |" in text
    assert "held: 1, changed: 1, one study only: 1." in text


def test_a_missing_paired_table_is_a_usage_error(tmp_path: Path) -> None:
    lone = tmp_path / "lone.md"
    lone.write_text(SUMMARY.format(rows="| at | keep | 0 | 1 | 1 | 1 | 1 |"))
    done = subprocess.run([sys.executable, str(SCRIPT), f"a={lone}", f"b={lone}"], capture_output=True, text=True)
    assert done.returncode == 2 and "lone-paired.md is not a file" in done.stderr
