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

import sys
import tempfile
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parent))


@click.command()
@click.option("--tracking-uri", required=True)
@click.option("--experiment", default="square-check", show_default=True)
@click.option("--student", default="default", show_default=True, help="Student recipe of the evaluated students.")
@click.option("--out", type=click.Path(path_type=Path), default=None)
def main(tracking_uri: str, experiment: str, student: str, out: Path | None) -> None:
    from robdistill.core.stats import mcnemar_exact, seed_summary
    from robdistill.tracking import schema
    from robdistill.tracking.results import load_results
    from robdistill.tracking.search import find_runs, run_identity
    from robdistill.train.perturbations import PERTURBATIONS

    runs = find_runs(tracking_uri, experiment, schema.STAGE_EVALUATION)
    perturbations = PERTURBATIONS.names()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for run in runs:  # newest first: the newest finished evaluation of each student counts
            who = run_identity(run, perturbations)
            if run.info.status != "FINISHED" or who.role != schema.ROLE_STUDENT or who.student != student:
                continue
            key = (who.teacher, who.perturb, who.seed)
            if key not in results:
                results[key] = load_results(run, tmp)
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
