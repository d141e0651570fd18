"""Side by side: the ratio rows (those with a goal) of two or more ``speed.py`` reports, e.g. one run
before a change and one after it, on the same machine.

    python benchmarks/speed_ratios.py before=/tmp/before.md after=/tmp/after.md

Each argument is ``label=path``; the table has one row per measurement with a goal, one column per
report (the ratio as that report printed it), and the goal.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path


def ratio_rows(path: Path) -> dict[str, tuple[str, str]]:
    """``{measurement: (ratio, goal)}`` for every table row of a speed report that has a goal."""
    rows = {}
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[3].startswith("<="):
            continue
        measurement = re.sub(r" \(interleaved with the line above\)$", "", cells[0])
        measurement = re.sub(r"\(a\) torchattacks (PGD-\d+) and the clean .*", r"(a) ours / torchattacks \1 with its verdict",
                             measurement)
        measurement = re.sub(r"\(a\) our (PGD-(\d+))$", r"(a) our \1 / its \2 input-gradient passes", measurement)
        measurement = re.sub(r"\(c\) one AT epoch \(PGD-(\d+)\) of rd.train_teacher, (.*)",
                             r"(c) an AT epoch (PGD-\1, \2) / its passes", measurement)
        ratio = re.match(r"(?:[^=]*= )?([0-9.]+)", cells[2])
        rows[measurement] = (ratio.group(1) if ratio else cells[2], cells[3])
    return rows


def main(args: list[str]) -> None:
    if not args or any("=" not in a for a in args):
        raise SystemExit(__doc__)
    reports = [(label, ratio_rows(Path(path))) for label, path in (a.split("=", 1) for a in args)]
    names = list(dict.fromkeys(name for _, rows in reports for name in rows))
    print("| measurement | " + " | ".join(label for label, _ in reports) + " | goal |")
    print("|---|" + "---|" * (len(reports) + 1))
    for name in names:
        goal = next(rows[name][1] for _, rows in reports if name in rows)
        cells = [rows[name][0] if name in rows else "-" for _, rows in reports]
        print(f"| {name} | " + " | ".join(cells) + f" | {goal} |")


if __name__ == "__main__":
    main(sys.argv[1:])
