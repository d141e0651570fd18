"""Two studies of the same grid side by side, from the tables the tool wrote for each (issue 28: the
full-scale Fashion-MNIST study against the CPU-scale one, "what held, what changed"):

- the summary tables (``robdistill sweep-report --out X.md`` writes ``X.md``): each cell's mean
  and 95% interval over seeds, per metric both studies report;
- the paired tables (``X-paired.md``): each comparison's difference and reading, and whether the
  reading held (the same word in both), changed, or exists in one study only.

    python benchmarks/compare_studies.py \\
        cpu-scale=benchmarks/results/seguin_fashion-mnist.md \\
        full-scale=benchmarks/results/fashion_mnist_study.md [--out comparison.md]

Nothing is typed by hand: every number and reading is copied from the two studies' own tables, and
the held / changed column compares their reading words as printed (the two studies may have been
read under different rules: each file says which).
"""
from __future__ import annotations

import argparse
from pathlib import Path

ROW_KEYS = {"summary": ("teacher", "perturb"), "paired": ("teacher", "comparison", "metric")}


def read_table(path: Path) -> list[dict[str, str]]:
    """The first Markdown table of ``path`` as rows keyed by its header."""
    header: list[str] | None = None
    rows: list[dict[str, str]] = []
    for line in path.read_text().splitlines():
        if not line.startswith("|"):
            if header is not None and rows:
                break
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
        elif set(line.replace("|", "").strip()) <= {"-", ":", " "}:
            continue
        else:
            rows.append(dict(zip(header, cells)))
    return rows


def paired_path(summary: Path) -> Path:
    return summary.with_name(f"{summary.stem}-paired{summary.suffix}")


def keyed(rows: list[dict[str, str]], kind: str) -> dict[tuple[str, ...], dict[str, str]]:
    return {tuple(row.get(k, "") for k in ROW_KEYS[kind]): row for row in rows}


def summary_section(labels: tuple[str, str], tables: tuple[list[dict[str, str]], list[dict[str, str]]]) -> list[str]:
    old, new = (keyed(t, "summary") for t in tables)
    metrics = [m for m in tables[0][0] if m in tables[1][0] and m not in ("teacher", "perturb", "seeds", "n")]
    lines = ["## Cell means (mean +- std [95% interval] over seeds)", "",
             "| teacher | perturb | metric | " + " | ".join(f"{label} ({kind})" for label in labels
                                                       for kind in ("seeds, n", "accuracy %")) + " |",
             "|---|---|---|" + "---|" * 4]
    for key in [k for k in old if k in new]:
        for metric in metrics:
            lines.append(f"| {key[0]} | {key[1]} | {metric} | {old[key]['seeds']}, {old[key]['n']} | {old[key][metric]} | "
                         f"{new[key]['seeds']}, {new[key]['n']} | {new[key][metric]} |")
    only = sorted(set(old) ^ set(new))
    if only:
        lines += ["", "Cells in one study only: " + ", ".join(f"{t} / {p}" for t, p in only) + "."]
    return lines


def paired_section(labels: tuple[str, str], tables: tuple[list[dict[str, str]], list[dict[str, str]]]) -> list[str]:
    old, new = (keyed(t, "paired") for t in tables)
    lines = ["## Paired readings (perturbation - keep, per teacher and metric)", "",
             f"| teacher | comparison | metric | {labels[0]} difference | {labels[0]} reading | "
             f"{labels[1]} difference | {labels[1]} reading | held? |", "|---|---|---|---|---|---|---|---|"]
    counts = {"held": 0, "changed": 0, "one study only": 0}
    for key in list(old) + [k for k in new if k not in old]:
        a, b = old.get(key), new.get(key)
        status = "one study only" if a is None or b is None else (
            "held" if a.get("reading") == b.get("reading") else "changed")
        counts[status] += 1
        cell = lambda row, col: row.get(col, "") if row else "-"  # noqa: E731
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {cell(a, 'difference (points)')} | {cell(a, 'reading')} | "
                     f"{cell(b, 'difference (points)')} | {cell(b, 'reading')} | {status} |")
    lines += ["", ", ".join(f"{status}: {n}" for status, n in counts.items()) + "."]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("studies", nargs=2, metavar="LABEL=SUMMARY.md")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if any("=" not in s for s in args.studies):
        parser.error("give each study as label=path of its summary table")
    (label_a, path_a), (label_b, path_b) = (s.split("=", 1) for s in args.studies)
    paths = (Path(path_a), Path(path_b))
    for path in (*paths, *map(paired_path, paths)):
        if not path.is_file():
            parser.error(f"{path} is not a file")
    labels = (label_a, label_b)
    lines = [f"# {label_a} against {label_b}", "",
             f"From `{paths[0]}` and `{paths[1]}` (and their `-paired` tables), written by "
             f"`python benchmarks/compare_studies.py {' '.join(args.studies)}`.", "",
             *summary_section(labels, (read_table(paths[0]), read_table(paths[1]))), "",
             *paired_section(labels, (read_table(paired_path(paths[0])), read_table(paired_path(paths[1]))))]
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
