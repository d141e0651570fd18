"""How the default L2 radii of digits and Fashion-MNIST were checked (METHODS section 1): PGD-20
accuracy of a standard model at its dataset's L-inf radius and at several L2 radii, on the
VALIDATION split only (never the test set; the radius is a choice of the protocol).

    python benchmarks/l2_radius.py --fmnist-teacher <cache>/teachers/fashion-mnist-standard-s0-<key>.pt \\
        --out benchmarks/results/l2_radius.md

Digits' standard teachers (seeds 0 and 1, the shipped recipe) are trained once into --cache; the
Fashion-MNIST one is a checkpoint of the study's `standard` recipe (optional: left out without it).
"""
from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

import click
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_CACHE, digits_model, emit, machine, markdown_table  # noqa: E402

RADII = {"digits": (0.2, 0.4, 0.5, 0.6, 0.8, 1.0), "fashion-mnist": (0.35, 0.5, 0.7, 1.0, 1.5)}


def row(label: str, model, val, info, radii) -> list[str]:
    from robdistill.attacks import PGD

    with torch.no_grad():
        clean = (model(val.x).argmax(1) == val.y).float().mean().item()
    cells = [label, f"{len(val.y)}", f"{100 * clean:.1f}"]
    linf = PGD(info.eps, steps=20, step_size=info.step_size).run(model, val.x, val.y, progress=False).robust
    cells.append(f"{100 * linf.float().mean().item():.1f}")
    for eps in radii:
        robust = PGD(eps, steps=20, step_size=eps / 4, norm="l2").run(model, val.x, val.y, progress=False).robust
        cells.append(f"{100 * robust.float().mean().item():.1f}")
    return cells


@click.command()
@click.option("--cache", type=click.Path(path_type=Path), default=DEFAULT_CACHE, show_default=True)
@click.option("--fmnist-teacher", type=click.Path(path_type=Path, exists=True), default=None,
              help="A Fashion-MNIST standard teacher checkpoint (the study's recipe).")
@click.option("--fmnist-n", default=2000, show_default=True, help="First N Fashion-MNIST validation images.")
@click.option("--out", type=click.Path(path_type=Path), default=None)
def main(cache, fmnist_teacher, fmnist_n, out) -> None:
    import robdistill as rd
    from robdistill.models.checkpoints import load_checkpoint

    torch.set_num_threads(1)
    started = time.perf_counter()
    lines = ["# Default L2 radii: a standard model under PGD-20 on the validation split", "",
             f"Command: `{' '.join(shlex.quote(a) for a in ['python', *sys.argv])}`  ",
             f"Machine: {machine()}  "]
    tables = []
    digits = rd.load_dataset("digits")
    rows = [row(f"standard, seed {seed}", digits_model("standard", cache, seed=seed), digits.val, digits.info,
                RADII["digits"]) for seed in (0, 1)]
    tables.append(("digits", rows))
    if fmnist_teacher is not None:
        data = rd.load_dataset("fashion-mnist")
        model, _ = load_checkpoint(fmnist_teacher)
        tables.append(("fashion-mnist", [row(f"standard ({fmnist_teacher.name})", model.eval(),
                                             data.val.head(fmnist_n), data.info, RADII["fashion-mnist"])]))
    lines += [f"Wall time: {time.perf_counter() - started:.0f} s", ""]
    for dataset, rows in tables:
        info = rd.load_dataset(dataset).info if dataset != "digits" else digits.info
        header = ["model", "n", "clean %", f"PGD-20 L-inf {info.eps:g} %",
                  *(f"PGD-20 L2 {eps:g} %" for eps in RADII[dataset])]
        lines += [f"## {dataset}", "", *markdown_table(header, rows), ""]
    emit("\n".join(lines), out)


if __name__ == "__main__":
    main()
