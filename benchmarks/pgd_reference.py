"""Reference validation of our PGD (METHODS section 4): on the same digits models and test images,
compare our PGD-k per-sample robust flags with pyautoattack's APGD-CE (Croce & Hein 2020) and with
torchattacks' PGD (Kim 2020), the latter run in a separate peer venv; under ``--threat-model l2``
the L2 forms (our PGD-L2, APGD-CE with norm L2, torchattacks' PGDL2). With ``--autoattack`` also our
AutoAttack ``standard`` (pyautoattack) against torchattacks' own re-implementation of AutoAttack
(standard, same norm and radius).

    python benchmarks/pgd_reference.py --threat-model l2 --teachers standard,at --autoattack \
        --out benchmarks/results/pgd_reference_l2.md

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


def apgd_ce_flags(model, x, y, eps: float, steps: int, restarts: int, seed: int, norm: str = "linf") -> torch.Tensor:
    """pyautoattack's APGD-CE with ``steps`` iterations; robust = correct on clean and on its output."""
    from pyautoattack.autopgd_base import APGDAttack

    from robdistill.core.modes import preserved_global_rng
    from robdistill.core.threat import norm_of

    with preserved_global_rng(x.device):
        attack = APGDAttack(model, n_iter=steps, n_restarts=restarts, eps=eps, norm=norm_of(norm).autoattack, loss="ce",
                            seed=seed, device=x.device, verbose=False)
        x_adv = attack.perturb(x, y).detach()
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
@click.option("--threat-model", "norm", type=click.Choice(["linf", "l2"]), default="linf", show_default=True,
              help="The ball every attack runs in, at digits' radius for it; the teachers are trained in it too.")
@click.option("--autoattack", is_flag=True,
              help="Also compare our AutoAttack standard with torchattacks' re-implementation (peer venv).")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write the Markdown report here.")
def main(teachers, steps, seed, n_eval, cache, peer, threads, norm, autoattack, out) -> None:
    import robdistill as rd
    from robdistill.attacks import PGD, AutoAttack, pgd_perturb

    torch.set_num_threads(threads)
    started = time.perf_counter()
    data = rd.load_dataset("digits")
    test = data.test
    x, y = (test.x[:n_eval], test.y[:n_eval]) if n_eval else (test.x, test.y)
    eps = data.info.eps_for(norm)  # digits' radius under the threat model
    step_size = 2.5 * eps / steps
    has_peer = peer_available(peer)
    label = {"linf": "L-inf", "l2": "L2"}[norm]
    lines = [f"# PGD reference validation on digits ({label} eps {eps}, n {len(y)})", "",
             f"Command: `{' '.join(shlex.quote(a) for a in ['python', *sys.argv])}`  ",
             f"Machine: {machine()}  "]
    if not has_peer:
        note = f"torchattacks peer venv not found at {peer}: its comparison is skipped. Create it with `{PEER_HOWTO}`."
        click.echo(note, err=True)
        lines.append(f"Note: {note}  ")
    tables = []
    for teacher in teachers.split(","):
        # the teachers are trained in the same ball (an L2 study's teachers are L2-trained)
        model = digits_model(teacher, cache, seed=0, overrides=[] if norm == "linf" else [f"threat_model={norm}"])
        with torch.no_grad():
            clean = model(x).argmax(1) == y
        ours = PGD(eps, seed=seed, steps=steps, step_size=step_size, norm=norm).run(model, x, y, progress=False).robust
        g = torch.Generator().manual_seed(seed)
        final = pgd_perturb(model, x, y, eps=eps, step_size=step_size, steps=steps, generator=g, norm=norm)
        with torch.no_grad():
            ours_final = clean & (model(final).argmax(1) == y)
        rows = [compare_row("clean", clean, ours), compare_row(f"ours PGD-{steps} (worst iterate)", ours, ours),
                compare_row(f"ours PGD-{steps} final iterate (pgd_perturb)", ours_final, ours),
                compare_row(f"pyautoattack APGD-CE {steps} it.", apgd_ce_flags(model, x, y, eps, steps, 1, seed, norm),
                            ours),
                compare_row("pyautoattack APGD-CE 100 it.", apgd_ce_flags(model, x, y, eps, 100, 1, seed, norm), ours)]
        if has_peer:
            with tempfile.TemporaryDirectory() as tmp:
                path = run_peer(peer, "flags", model, x, y, Path(tmp), eps=eps, steps=steps, step_size=step_size,
                                seed=seed, threads=threads, norm=norm)
                theirs = torch.load(path)["robust"]
            name = "PGDL2" if norm == "l2" else "PGD"
            rows.append(compare_row(f"torchattacks {name}-{steps} (final iterate)", theirs, ours))
        if autoattack:
            aa = AutoAttack(eps, seed=seed, norm=norm).run(model, x, y, progress=False).robust
            rows.append(compare_row("ours AutoAttack standard (pyautoattack)", aa, ours))
            if has_peer:
                with tempfile.TemporaryDirectory() as tmp:
                    path = run_peer(peer, "autoattack", model, x, y, Path(tmp), eps=eps, seed=seed, threads=threads,
                                    norm=norm)
                    theirs_aa = torch.load(path)["robust"]
                rows.append(compare_row("torchattacks AutoAttack standard (its re-implementation)", theirs_aa, ours))
                rows.append(compare_row("  the same, against ours AutoAttack (robust only for ours AA / for theirs)",
                                        theirs_aa, aa))
        tables.append((teacher, rows))
    header = ["attack", "accuracy % [95% Wilson]", "robust only for ours", "robust only for this", "McNemar p"]
    lines += [f"Wall time: {time.perf_counter() - started:.0f} s", ""]
    for teacher, rows in tables:
        lines += [f"## teacher `{teacher}`", "", *markdown_table(header, rows), ""]
    emit("\n".join(lines), out)


if __name__ == "__main__":
    main()
