"""Reference validation of our PGD (METHODS section 4): on the same digits models and test images,
compare our PGD-k per-sample robust flags with pyautoattack's APGD-CE (Croce & Hein 2020) and with
torchattacks' PGD (Kim 2020), the latter run in a separate peer venv.

Models: the ``standard`` and ``at`` teacher recipes, trained once by robdistill and cached under
--cache. Per model and attack: robust accuracy with its 95% Wilson interval, and against our PGD-k
the discordant samples and McNemar's exact test (paired on the same images).

    python benchmarks/pgd_reference.py --out benchmarks/results/pgd_reference.md

Semantics differ on purpose and are reported, not hidden: our PGD counts a sample robust only if it
is correct at every iterate (AutoAttack's worst case); torchattacks and our training-time
``pgd_perturb`` judge the final iterate only; APGD-CE keeps the best loss point, and uses its own
step-size schedule.
"""
from __future__ import annotations

import shlex
import sys
import tempfile
import time
from pathlib import Path

import click
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (DEFAULT_CACHE, DEFAULT_PEER, PEER_HOWTO, digits_model, emit, machine, markdown_table,  # noqa: E402
                     peer_available, run_peer)


def apgd_ce_flags(model, x, y, eps: float, steps: int, restarts: int, seed: int) -> torch.Tensor:
    """pyautoattack's APGD-CE with ``steps`` iterations; robust = correct on clean and on its output."""
    from pyautoattack.autopgd_base import APGDAttack

    from robdistill.core.modes import preserved_global_rng

    with preserved_global_rng(x.device):
        attack = APGDAttack(model, n_iter=steps, n_restarts=restarts, eps=eps, norm="Linf", loss="ce",
                            seed=seed, device=x.device, verbose=False)
        x_adv = attack.perturb(x, y)
    with torch.no_grad():
        return (model(x).argmax(1) == y) & (model(x_adv).argmax(1) == y)


def compare_row(name: str, flags: torch.Tensor, ours: torch.Tensor) -> list[str]:
    from robdistill.core.stats import mcnemar_exact, wilson

    p = wilson(int(flags.sum()), len(flags))
    only_ours = int((ours & ~flags).sum())
    only_other = int((flags & ~ours).sum())
    pvalue = mcnemar_exact(ours.tolist(), flags.tolist())
    return [name, f"{100 * p.value:.1f} [{100 * p.low:.1f}, {100 * p.high:.1f}]", str(only_ours), str(only_other),
            "-" if flags is ours or name == "clean" else f"{pvalue:.3g}"]


@click.command()
@click.option("--teachers", default="standard,at", show_default=True)
@click.option("--steps", default=20, show_default=True, help="k of our PGD-k and torchattacks' PGD.")
@click.option("--seed", default=0, show_default=True)
@click.option("--n", "n_eval", default=0, show_default=True, help="First N test images (0: all 359).")
@click.option("--cache", type=click.Path(path_type=Path), default=DEFAULT_CACHE, show_default=True)
@click.option("--peer", type=click.Path(path_type=Path), default=DEFAULT_PEER, show_default=True,
              help="python of the peer venv with torchattacks.")
@click.option("--threads", default=1, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write the Markdown report here.")
def main(teachers, steps, seed, n_eval, cache, peer, threads, out) -> None:
    import robdistill as rd
    from robdistill.attacks import PGD, pgd_perturb

    torch.set_num_threads(threads)
    started = time.perf_counter()
    test = rd.load_dataset("digits").test
    x, y = (test.x[:n_eval], test.y[:n_eval]) if n_eval else (test.x, test.y)
    eps = 0.1  # digits' eps
    step_size = 2.5 * eps / steps
    has_peer = peer_available(peer)
    lines = [f"# PGD reference validation on digits (eps {eps}, n {len(y)})", "",
             f"Command: `{' '.join(shlex.quote(a) for a in ['python', *sys.argv])}`  ",
             f"Machine: {machine()}  "]
    if not has_peer:
        note = f"torchattacks peer venv not found at {peer}: its comparison is skipped. Create it with `{PEER_HOWTO}`."
        click.echo(note, err=True)
        lines.append(f"Note: {note}  ")
    tables = []
    for teacher in teachers.split(","):
        model = digits_model(teacher, cache, seed=0)
        with torch.no_grad():
            clean = model(x).argmax(1) == y
        ours = PGD(eps, seed=seed, steps=steps, step_size=step_size).run(model, x, y, progress=False).robust
        g = torch.Generator().manual_seed(seed)
        final = pgd_perturb(model, x, y, eps=eps, step_size=step_size, steps=steps, generator=g)
        with torch.no_grad():
            ours_final = clean & (model(final).argmax(1) == y)
        rows = [compare_row("clean", clean, ours), compare_row(f"ours PGD-{steps} (worst iterate)", ours, ours),
                compare_row(f"ours PGD-{steps} final iterate (pgd_perturb)", ours_final, ours),
                compare_row(f"pyautoattack APGD-CE {steps} it.", apgd_ce_flags(model, x, y, eps, steps, 1, seed), ours),
                compare_row("pyautoattack APGD-CE 100 it.", apgd_ce_flags(model, x, y, eps, 100, 1, seed), ours)]
        if has_peer:
            with tempfile.TemporaryDirectory() as tmp:
                path = run_peer(peer, "flags", model, x, y, Path(tmp), eps=eps, steps=steps, step_size=step_size,
                                seed=seed, threads=threads)
                theirs = torch.load(path)["robust"]
            rows.append(compare_row(f"torchattacks PGD-{steps} (final iterate)", theirs, ours))
        tables.append((teacher, rows))
    header = ["attack", "accuracy % [95% Wilson]", "robust only for ours", "robust only for this", "McNemar p"]
    lines += [f"Wall time: {time.perf_counter() - started:.0f} s", ""]
    for teacher, rows in tables:
        lines += [f"## teacher `{teacher}`", "", *markdown_table(header, rows), ""]
    emit("\n".join(lines), out)


if __name__ == "__main__":
    main()
