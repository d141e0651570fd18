"""Seguin et al.'s claims (1) and (2) from teacher checkpoints, without attacking anything.

`robdistill sweep` states claims (1) (mean max logit and logit gap per teacher) and (2) (Spearman
agreement of per-sample confidence with the standard teacher) from the teachers it ran, and
`robdistill sweep-report` from the teacher logits its sweeps logged. This script states them for
any set of teacher checkpoints, e.g. every seed of a cache filled by several sweeps (some older
than the logged logits), on the first N test images the sweep's suite evaluated. It also draws,
per teacher, the grid of images with the largest confidence difference against the reference.

    python benchmarks/seguin_claims.py <cache>/teachers/fashion-mnist-*.pt --n-eval 500 \\
        --grids grids/
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine  # noqa: E402


@click.command()
@click.argument("checkpoints", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--n-eval", type=int, required=True, help="First N test images (the sweep suite's n_eval).")
@click.option("--reference", default="standard", show_default=True, help="Teacher the others are paired with.")
@click.option("--teachers", default=None, help="Only these recipe names, comma-separated (default: all given).")
@click.option("--grids", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write the confidence-difference grid per teacher (lowest seed) into this folder.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also write Markdown.")
def main(checkpoints: tuple[Path, ...], n_eval: int, reference: str, teachers: str | None, grids: Path | None,
         out: Path | None) -> None:
    import robdistill as rd
    from robdistill.analysis.logits import logits_of
    from robdistill.analysis.seguin import confidence_difference_grids, teacher_claims
    from robdistill.eval.tables import format_table

    wanted = set(teachers.split(",")) if teachers else None
    loaded = {}
    for path in checkpoints:
        model, payload = rd.load_checkpoint(path)
        name = payload["recipe"].get("name", "")
        if payload["kind"] != "teacher" or (wanted and name not in wanted):
            continue
        key = (name, int(payload["seed"]))
        if key in loaded:
            raise click.UsageError(f"two checkpoints for teacher {key[0]} seed {key[1]} ({loaded[key][2]} and "
                                   f"{path}); pass one")
        loaded[key] = (model, payload["dataset"], path)
    datasets = {dataset for _, dataset, _ in loaded.values()}
    if len(datasets) != 1:
        raise click.UsageError(f"need teacher checkpoints of one dataset; got {sorted(datasets) or 'none'}")
    dataset = datasets.pop()
    try:
        test = rd.load_dataset(dataset).test.head(n_eval)
    except rd.UserError as exc:
        raise click.UsageError(str(exc)) from None
    order = sorted(loaded, key=lambda key: (key[0] != reference, key))  # the reference teacher first
    logits = {key: logits_of(loaded[key][0], test.x) for key in order}
    claims = teacher_claims(logits, reference)
    lines = [f"Seguin et al. claims (1) and (2) on {dataset}, first {len(test)} test images", "",
             f"- checkpoints: {len(loaded)} teachers ({', '.join(f'{t} s{s}' for t, s in sorted(loaded))})",
             f"- machine: {machine()}", "",
             "claim 1: teacher logits (mean over seeds [95% t-interval])", "```",
             format_table(claims.logits_header, claims.logits_rows), "```", "",
             "claim 2: sample-wise agreement of the max probability", "```",
             format_table(claims.agreement_header, claims.agreement_rows), "```"]
    if grids is not None:
        grids.mkdir(parents=True, exist_ok=True)
        lines += [f"\ngrid: {path}" for path in confidence_difference_grids(test.x, test.y, logits, reference, grids)]
    emit("\n".join(lines), out)


if __name__ == "__main__":
    main()
