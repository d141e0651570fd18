"""Is a student's robustness real, or gradient masking? The black-box check of issue 4.

Reads the evaluations that `robdistill evaluate <students> --suite benchmarks/suites/square-check.toml`
logged (PGD-20, AutoAttack's white-box APGD-CE + APGD-T, and Square alone with 5,000 queries) and
prints, per teacher and perturbation, the accuracy under each over seeds, the number of samples
that survive every white-box attack but fall to Square (the masking signature), and each
perturbation minus `keep` under the worst case *including Square*, paired by seed.

    python benchmarks/square_check.py --tracking-uri sqlite:////work/study/square/mlflow.db \\
        --experiment square-check --out benchmarks/results/square_check_digits.md
"""
from __future__ import annotations

import json
import re
import sys
import tempfile
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parent))

NAME = re.compile(r"student:(?P<dataset>[a-z0-9-]+?)-(?P<teacher>standard|at|alp|aalp)-(?P<perturb>[a-z-]+)-"
                  r"default-s(?P<seed>\d+)-[0-9a-f]+")


@click.command()
@click.option("--tracking-uri", required=True)
@click.option("--experiment", default="square-check", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None)
def main(tracking_uri: str, experiment: str, out: Path | None) -> None:
    import mlflow

    from robdistill.tracking.search import find_runs
    from robdistill.eval.runner import result_from_json
    from robdistill.core.stats import mcnemar_exact, seed_summary

    runs = find_runs(tracking_uri, experiment, "evaluation")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for run in runs:
            match = NAME.fullmatch(run.data.tags.get("mlflow.runName", "").removeprefix("eval "))
            if match is None or run.info.status != "FINISHED":
                continue
            key = (match["teacher"], match["perturb"], int(match["seed"]))
            if key in results:
                continue  # newest first
            local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="results.json",
                                                        dst_path=f"{tmp}/{run.info.run_id}")
            results[key] = result_from_json(json.loads(Path(local).read_text()))
    cells = sorted({(t, p) for t, p, _ in results}, key=lambda c: (c[0] != "standard", c[1] != "keep", c))
    lines = ["| teacher | perturb | seeds | clean | PGD-20 | APGD-CE+T | Square | worst (all) | "
             "white-box survivors fooled by Square (per seed) |", "|" + "---|" * 9]
    pct = lambda s: f"{100 * s.mean:.1f} [{100 * s.low:.1f}, {100 * s.high:.1f}]"  # noqa: E731
    for teacher, perturb in cells:
        seeds = sorted(s for t, p, s in results if (t, p) == (teacher, perturb))
        rs = [results[(teacher, perturb, s)] for s in seeds]
        acc = lambda k: seed_summary([r.accuracies()[k].value for r in rs])  # noqa: E731
        gaps = []
        for r in rs:
            white = r.clean & r.robust["pgd"] & r.robust["aa_white"]
            gaps.append(f"{int((white & ~r.robust['square']).sum())}/{int(white.sum())}")
        lines.append(f"| {teacher} | {perturb} | {len(seeds)} | {pct(acc('clean'))} | {pct(acc('pgd'))} | "
                     f"{pct(acc('aa_white'))} | {pct(acc('square'))} | {pct(acc('worst'))} | {', '.join(gaps)} |")
    paired = ["| teacher | perturbation − keep | worst-case difference, points [95% t over seeds] | "
              "McNemar p per seed |", "|---|---|---|---|"]
    for teacher, perturb in cells:
        if perturb == "keep" or (teacher, "keep") not in cells:
            continue
        seeds = sorted(s for t, p, s in results if (t, p) == (teacher, perturb) and (teacher, "keep", s) in results)
        diffs = [results[(teacher, perturb, s)].accuracies()["worst"].value -
                 results[(teacher, "keep", s)].accuracies()["worst"].value for s in seeds]
        ps = [mcnemar_exact(results[(teacher, perturb, s)].worst.tolist(), results[(teacher, "keep", s)].worst.tolist())
              for s in seeds]
        d = seed_summary(diffs)
        paired.append(f"| {teacher} | {perturb} | {100 * d.mean:+.1f} [{100 * d.low:+.1f}, {100 * d.high:+.1f}] | "
                      f"{', '.join(f'{p:.2g}' for p in ps)} |")
    report = "\n".join(["## Square check", "", *lines, "", *paired, ""])
    click.echo(report)
    if out is not None:
        out.write_text(report)


if __name__ == "__main__":
    main()
