"""Do students inherit the other traits of robust teachers? (issue 4's extra; Chen et al. 2020)

For every teacher and student checkpoint in a robdistill cache (e.g. the one the Seguin sweep and
the teacher study filled), measure clean accuracy, PGD-20 accuracy, accuracy under Gaussian noise,
blur and lowered contrast, and the total variation of the first-layer filters; print per
(model, perturbation) the mean over seeds with its 95% t-interval, the Spearman correlation of
each trait with PGD accuracy across all models, and the paired differences students of the AT
teacher minus students of the standard teacher.

    python benchmarks/traits_study.py --cache /work/study/digits/cache --out benchmarks/results/traits_digits.md
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import click
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402

TRAITS = ("clean", "pgd", "corrupt/gaussian-noise", "corrupt/blur", "corrupt/contrast", "conv1_tv")


def describe(path: Path, dataset: str, perturbations: list[str], student: str = "default"
             ) -> tuple[str, str, int] | None:
    """(teacher, perturbation or 'teacher', seed) of a cached checkpoint, read from its file name by
    the tracking schema (:func:`robdistill.tracking.schema.parse_checkpoint_name`); None for another
    dataset's, another form's, or a student of another recipe than ``student``."""
    from robdistill.tracking.schema import ROLE_TEACHER, parse_checkpoint_name

    who = parse_checkpoint_name(path.name, dataset, perturbations)
    if who is None or who.teacher is None:
        return None
    if who.role == ROLE_TEACHER:
        return who.teacher, "teacher", who.seed
    return (who.teacher, who.perturb, who.seed) if who.student == student else None


def measure(path: Path, test, eps: float, step_size: float) -> dict[str, float]:
    import robdistill as rd
    from robdistill.analysis.traits import traits
    from robdistill.train.loop import accuracy

    model, _ = rd.load_checkpoint(path, "cpu")
    out = {"clean": accuracy(model, test),
           "pgd": rd.attacks.PGD(eps, steps=20, step_size=step_size).run(model, test.x, test.y,
                                                                         progress=False).robust.float().mean().item()}
    out.update(traits(model, test))
    return out


def fmt(summary, scale: float = 100.0, digits: int = 1, bounds: tuple[float, float] | None = None) -> str:
    """Mean [95% t-interval]; ``bounds`` clips the interval to a quantity's range (an accuracy: 0-1)."""
    if summary.std != summary.std:  # one seed
        return f"{scale * summary.mean:.{digits}f}"
    low, high = (max(summary.low, bounds[0]), min(summary.high, bounds[1])) if bounds else (summary.low, summary.high)
    return f"{scale * summary.mean:.{digits}f} [{scale * low:.{digits}f}, {scale * high:.{digits}f}]"


@click.command()
@click.option("--cache", type=click.Path(path_type=Path, exists=True), required=True,
              help="A robdistill --cache-dir with teachers/ and students/.")
@click.option("--dataset", default="digits", show_default=True)
@click.option("--teachers", default="standard,at,alp,aalp", show_default=True, help="Teachers to include.")
@click.option("--student", default="default", show_default=True, help="Student recipe of the students to include.")
@click.option("--n-eval", type=int, default=None, help="First N test images (default: the whole test set).")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Markdown results file.")
def main(cache: Path, dataset: str, teachers: str, student: str, n_eval: int | None, out: Path | None) -> None:
    from scipy.stats import spearmanr

    import robdistill as rd
    from robdistill.core.stats import seed_summary
    from robdistill.train.perturbations import PERTURBATIONS

    torch.set_num_threads(1)
    started = time.perf_counter()
    splits = rd.load_dataset(dataset)
    test = splits.test.head(n_eval)
    wanted = teachers.split(",")
    rows: dict[tuple[str, str], dict[int, dict[str, float]]] = {}
    # the newest checkpoint per (teacher, perturbation, seed): a cell distilled twice counts once
    paths = sorted([*(cache / "teachers").glob(f"{dataset}-*.pt"), *(cache / "students").glob(f"{dataset}-*.pt")],
                   key=lambda path: path.stat().st_mtime)
    newest = {}
    for path in paths:
        described = describe(path, dataset, PERTURBATIONS.names(), student)
        if described is not None and described[0] in wanted:
            newest[described] = path
    if not newest:
        raise click.UsageError(f"no {dataset} checkpoints of teachers {teachers} (or their students) under {cache}")
    for (teacher, perturb, seed), path in sorted(newest.items()):
        rows.setdefault((teacher, perturb), {})[seed] = measure(path, test, splits.info.eps, splits.info.step_for(splits.info.eps))
        click.echo(f"{path.name}: " + ", ".join(f"{k} {v:.3f}" for k, v in rows[(teacher, perturb)][seed].items()),
                   err=True)
    order = [p for p in ["teacher", "keep", "nonmax-shuffle", "nonmax-flatten", "confidence-swap", "onehot",
                         "nonmax-flatten-mean"]]
    keys = sorted(rows, key=lambda k: (wanted.index(k[0]), order.index(k[1]) if k[1] in order else 99))
    header = ["teacher", "model", "seeds", "clean %", "PGD-20 %", "noise %", "blur %", "contrast %", "conv1 TV"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key in keys:
        by_seed = rows[key]
        cells = [fmt(seed_summary([by_seed[s][t] for s in sorted(by_seed)]), 1.0, 3) if t == "conv1_tv" else
                 fmt(seed_summary([by_seed[s][t] for s in sorted(by_seed)]), bounds=(0.0, 1.0)) for t in TRAITS]
        lines.append(f"| {key[0]} | {'teacher' if key[1] == 'teacher' else 'student <- ' + key[1]} | "
                     f"{len(by_seed)} | " + " | ".join(cells) + " |")
    every = [m for by_seed in rows.values() for m in by_seed.values()]
    corr = ["| trait | Spearman rho with PGD-20 accuracy (all models) | p |", "|---|---|---|"]
    for trait in TRAITS[2:]:
        rho, p = spearmanr([m["pgd"] for m in every], [m[trait] for m in every])
        corr.append(f"| {trait} | {rho:+.2f} | {p:.2g} |")
    paired = ["| perturbation | trait | AT-teacher student − standard-teacher student, paired by seed [95% t] |",
              "|---|---|---|"]
    for perturb in [p for p in order[1:] if ("at", p) in rows and ("standard", p) in rows]:
        seeds = sorted(set(rows[("at", perturb)]) & set(rows[("standard", perturb)]))
        for trait in TRAITS:
            scale, digits = (1.0, 3) if trait == "conv1_tv" else (100.0, 1)
            diff = seed_summary([rows[("at", perturb)][s][trait] - rows[("standard", perturb)][s][trait] for s in seeds])
            paired.append(f"| {perturb} | {trait} | {fmt(diff, scale, digits)} |")
    report = "\n".join([
        f"# Other traits of robust models, inherited? ({dataset}; Chen et al. 2020)", "",
        f"Command: `python benchmarks/traits_study.py --cache {cache} --dataset {dataset} --teachers {teachers}"
        + (f" --student {student}" if student != "default" else "") + (f" --n-eval {n_eval}" if n_eval is not None else "") + "`  ",
        f"Machine: {machine()}  ",
        f"Wall time: {time.perf_counter() - started:.0f} s; {len(every)} models, n = {len(test)} test images, "
        f"eps {splits.info.eps} for PGD-20 (step {splits.info.step_for(splits.info.eps):g}, the dataset's).  ",
        "Corruptions (robdistill.analysis.traits defaults): Gaussian noise sigma 0.2, Gaussian blur sigma 1 px, contrast x0.4. "
        "conv1 TV: total variation of each first-layer filter / its L1 norm, mean over filters (lower = smoother).",
        "", "## Per model (mean over seeds [95% t-interval])", "", *lines,
        "", "## Across all models", "", *corr,
        "", "## Students of the AT teacher minus students of the standard teacher", "", *paired, ""])
    click.echo(report)
    if out is not None:
        out.write_text(report)
        click.echo(f"wrote {out}", err=True)


if __name__ == "__main__":
    main()
