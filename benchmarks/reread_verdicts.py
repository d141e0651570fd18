"""Re-read a study's printed tables under the verdict rules of issue 29, without the tracking store.

The results files in `benchmarks/results/` were generated from MLflow stores that are not kept with
the repository. Their tables print, per comparison, the mean difference over seeds, its 95%
t-interval (rounded) and, for claim 3, the paired t-test's p. That is enough to apply the new rules
(`robdistill.analysis.verdicts`) to claims 1 and 3:

- Claim 3 (and every secondary metric): each metric's comparisons are one family; the printed p is
  Holm-adjusted within it; the per-seed spread is recovered from the interval's half-width
  (std = half * sqrt(n) / t_{0.975, n-1}) for the equivalence test (+-3 points) and the seeds needed.
- Claim 1: the max-logit and gap differences of every teacher but the reference are one family; the
  p-value is recovered from the mean and the interval (t = mean / (std / sqrt(n))).

Claim 2's new evidence (the per-seed difference from the reference's seed-to-seed agreement) needs
the per-seed correlations, which no table prints: it is left to `robdistill report`.

    python benchmarks/reread_verdicts.py benchmarks/results/seguin_study_digits_report.md \\
        --out benchmarks/results/verdicts_reread_digits.md
"""
from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import click

NUMBER = r"[-+]?\d+(?:\.\d+)?"
INTERVAL = re.compile(rf"^\s*({NUMBER})(?:\s*\[({NUMBER}),\s*({NUMBER})\])?\s*$")


def markdown_tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """Every pipe table of a Markdown file: (header, rows)."""
    tables, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and re.match(r"^\|[-| :]+\|$", lines[i + 1]):
            header = [c.strip() for c in lines[i].strip("|").split("|")]
            rows, i = [], i + 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append([c.strip().strip("*") for c in lines[i].strip("|").split("|")])
                i += 1
            tables.append((header, rows))
        else:
            i += 1
    return tables


def summary_from_interval(text: str, n: int):
    """A SeedSummary-like object (mean, std, low, high, n) from 'mean [low, high]' (a 95% t-interval
    over n seeds); the std is recovered from the half-width."""
    from scipy.stats import t as student_t

    from robdistill.core.stats import SeedSummary

    match = INTERVAL.match(text)
    if not match:
        raise ValueError(f"not 'mean [low, high]': {text!r}")
    mean = float(match.group(1))
    if match.group(2) is None or n < 2:
        return SeedSummary((math.nan,) * n, mean, math.nan, math.nan, math.nan)
    low, high = float(match.group(2)), float(match.group(3))
    std = (high - low) / 2 * math.sqrt(n) / float(student_t.ppf(0.975, n - 1))
    return SeedSummary((math.nan,) * n, mean, std, low, high)


def scaled(s, factor: float):
    from robdistill.core.stats import SeedSummary

    return SeedSummary(s.values, s.mean * factor, s.std * factor, s.low * factor, s.high * factor)


def t_p(s) -> float:
    from scipy.stats import t as student_t

    if not s.std > 0:
        return math.nan
    return float(2 * student_t.sf(abs(s.mean) / (s.std / math.sqrt(s.n)), s.n - 1))


def old_verdict(reading: str) -> str:
    """The old rule's verdict for a claim that predicts 'lower' (report.build before issue 29)."""
    words = reading.split("(")[0].split()
    return "supported" if "lower" in words else "contradicted" if "higher" in words else "inconclusive"


def claim3(tables, primary: str) -> tuple[list[str], list[str]]:
    from robdistill.analysis.verdicts import (DELTA_ACCURACY, claim_verdict, fmt_p, read_family)

    paired = next(rows for header, rows in tables if header[:3] == ["teacher", "comparison", "metric"])
    metrics = list(dict.fromkeys(r[2] for r in paired))
    lines = ["| teacher | comparison | metric | family | seeds | difference (points) | p (printed) | Holm p | "
             "TOST p (Holm) | old reading | new reading | seeds needed |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    changed, verdicts = [], ["| teacher | comparison | evidence | old verdict (worst, old rule) | new verdict "
                             f"({primary}) |", "|---|---|---|---|---|"]
    old_worst = {(r[0], r[1]): r[7] for r in paired if r[2] == "worst"}
    for metric in metrics:
        rows = [r for r in paired if r[2] == metric]
        diffs = [scaled(summary_from_interval(r[4], int(r[3])), 0.01) for r in rows]
        printed = [math.nan if r[5] == "-" else float(r[5]) for r in rows]
        for r, d, reading in zip(rows, diffs, read_family(diffs, DELTA_ACCURACY, pvalues=printed)):
            family = "primary" if metric == primary else "secondary"
            lines.append(f"| {r[0]} | {r[1]} | {metric} | {family} | {r[3]} | {r[4]} | {r[5]} | "
                         f"{fmt_p(reading.p_adjusted)} | {fmt_p(reading.tost_adjusted)} | {r[7]} | {reading.text} | "
                         f"{reading.seeds_text} |")
            if r[7].split("(")[0].strip() != reading.word:
                changed.append(f"- claim 3 family `{metric}` ({family}), {r[0]} {r[1]}: {r[4]}, p {r[5]}: "
                               f"{r[7]} -> {reading.text} (Holm p {fmt_p(reading.p_adjusted)}, TOST p (Holm) "
                               f"{fmt_p(reading.tost_adjusted)})")
            if metric == primary and r[0] != "standard" and r[1].split(" - ")[0] in ("nonmax-shuffle", "nonmax-flatten"):
                new = claim_verdict(reading.word)
                verdicts.append(f"| {r[0]} | {r[1]} | {r[4]} | {old_verdict(old_worst.get((r[0], r[1]), '-'))} | "
                                f"{new} |")
    return lines + [""] + verdicts, changed


def claim1(tables) -> tuple[list[str], list[str]]:
    from robdistill.analysis.verdicts import claim_verdict, combined_verdict, fmt_p, read_family

    found = [rows for header, rows in tables if header[:2] == ["teacher", "seeds"] and "reading" in header]
    if not found:
        return [], []
    rows = [r for r in found[0] if r[4] != "-"]
    family, keys = [], []
    for r in rows:
        n = len(r[1].split(","))
        for name, column in (("max logit", 4), ("gap", 5)):
            family.append(summary_from_interval(r[column], n))
            keys.append((r, name))
    readings = read_family(family, None, pvalues=[t_p(s) for s in family])
    lines = ["| teacher | difference | p (from the interval) | Holm p | old reading | new reading | seeds needed |",
             "|---|---|---|---|---|---|---|"]
    by_teacher: dict[str, list] = {}
    changed = []
    for (r, name), s, reading in zip(keys, family, readings):
        old = next(part.strip() for part in r[6].split(",") if part.strip().startswith(name))
        lines.append(f"| {r[0]} | {name} {r[4] if name == 'max logit' else r[5]} | {fmt_p(reading.p)} | "
                     f"{fmt_p(reading.p_adjusted)} | {old} | {name} {reading.text} | {reading.seeds_text} |")
        if old.split()[-1] != reading.word:
            changed.append(f"- claim 1, {r[0]} {name}: {old} -> {name} {reading.text} "
                           f"(p {fmt_p(reading.p)}, Holm p {fmt_p(reading.p_adjusted)})")
        by_teacher.setdefault(r[0], []).append(claim_verdict(reading.word))
    lines += ["", "| teacher | old verdict | new verdict |", "|---|---|---|"]
    for r in rows:
        new = combined_verdict(by_teacher[r[0]])
        parts = [old_verdict(p) for p in r[6].split(",")]
        old = "supported" if all(v == "supported" for v in parts) else (
            "contradicted" if "contradicted" in parts else "inconclusive")
        lines.append(f"| {r[0]} | {old} | {new} |")
    return lines, changed


@click.command()
@click.argument("study", type=click.Path(exists=True, path_type=Path))
@click.option("--paired", type=click.Path(exists=True, path_type=Path), default=None,
              help="A `sweep-report --out x.md` paired file, when STUDY has no paired table (e.g. the extras).")
@click.option("--out", type=click.Path(path_type=Path), default=None)
def main(study: Path, paired: Path | None, out: Path | None) -> None:
    from robdistill.analysis.verdicts import DELTA_ACCURACY, PRIMARY_METRIC

    tables = markdown_tables(study.read_text()) + (markdown_tables(paired.read_text()) if paired else [])
    c3, changed3 = claim3(tables, PRIMARY_METRIC)
    c1, changed1 = claim1(tables)
    text = [f"# {study.name} re-read under the verdict rules of issue 29", "",
            f"Generated by `python benchmarks/reread_verdicts.py {study}"
            + (f" --paired {paired}" if paired else "") + f"` from the tables printed in that file, without the "
            "tracking store. Rules: `robdistill.analysis.verdicts` (Holm within each family, alpha 0.05; a direction "
            f"needs the Holm-adjusted p below 0.05; 'no difference beyond delta' needs the Holm-adjusted two "
            f"one-sided tests against +-{100 * DELTA_ACCURACY:g} points below 0.05; seeds needed at 80% power, "
            "alpha / m). The printed paired-t p is used as is; the per-seed spread is recovered from the rounded "
            "95% interval (std = half-width x sqrt(n) / t_0.975,n-1), so TOST p and seeds needed are approximate "
            "to that rounding. Claim 2 is not re-read: its new evidence needs per-seed correlations no table "
            "prints; regenerate with `robdistill report` when the store is available.", ""]
    if c1:
        text += ["## Claim 1 (family: every teacher but standard x {max logit, gap})", "", *c1, ""]
    text += [f"## Claim 3 and the secondary metrics (one family per metric; primary: {PRIMARY_METRIC})", "", *c3, "",
             "## Readings that changed", "", *(changed1 + changed3 or ["- none"]), ""]
    output = "\n".join(text)
    if out:
        out.write_text(output)
        click.echo(f"wrote {out}")
    else:
        click.echo(output)


if __name__ == "__main__":
    sys.exit(main())
