"""Which part of PGD pays to compile (issue 33 item 4: "torch.compile of the model, and of the PGD
step where it pays"), on one batch of a freshly initialised model labelled with its own predictions:

- ``eager step``: a plain PGD-k step (forward, cross-entropy, input gradient, signed step,
  projection into the eps 0.05 ball) written here, run eagerly k times on every image;
- ``whole step compiled``: the same function through ``torch.compile`` (Dynamo breaks the graph at
  ``torch.autograd.grad``; the forward, the backward and the step are compiled around it);
- ``library, model compiled``: our ``rd.attacks.PGD`` under the ``fp32+compile`` precision that
  ``--compile`` sets (the model compiled; the attack's loop, per-step verdicts and eager fp32
  confirmation as they are);
- ``library, eager``: our ``rd.attacks.PGD`` in fp32.

The library's two run at eps 0, where no image is ever fooled, so that they too spend every step
on every image (at eps > 0 they would stop attacking the images they fool).

The four run interleaved, round by round, after a warm-up call of each (which compiles); each row
gives the median seconds per PGD-k and the ratio eager step / variant (> 1: faster than the eager
step). The compiled step's final iterate is checked against the eager step's (max abs difference).

    OMP_NUM_THREADS=1 python benchmarks/speed_compile_step.py --out benchmarks/results/speed_compile_step_cpu.md
"""
from __future__ import annotations

import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import click
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine, markdown_table, random_model_and_batch  # noqa: E402

MODELS = (("small-cnn", (1, 8, 8), (0.5,), (0.5,)), ("compact-cnn", (1, 28, 28), (0.2860,), (0.3530,)))


def pgd_step(model: torch.nn.Module, eps: float, step_size: float) -> Callable:
    def step(current: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        leaf = current.detach().requires_grad_(True)
        grad, = torch.autograd.grad(F.cross_entropy(model(leaf), y, reduction="sum"), leaf)
        stepped = leaf.detach() + step_size * grad.sign()
        return torch.min(torch.max(stepped, x - eps), x + eps).clamp(0, 1)
    return step


@click.command()
@click.option("--n", default=256, show_default=True, help="Images per batch.")
@click.option("--steps", default=10, show_default=True)
@click.option("--repeats", default=9, show_default=True, help="Interleaved rounds.")
@click.option("--threads", default=1, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None)
def main(n: int, steps: int, repeats: int, threads: int, device: str, out: Path | None) -> None:
    import robdistill as rd
    from robdistill.core.precision import PRECISIONS

    torch.set_num_threads(threads)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    started = time.perf_counter()
    rows = []
    for name, shape, mean, std in MODELS:
        model, x, y = random_model_and_batch(name, shape, mean, std, n, device)
        step = pgd_step(model, 0.05, 0.01)  # a real ball, so the two iterates can differ
        compiled_step = torch.compile(step)

        def k_steps(fn: Callable) -> torch.Tensor:
            current = x.clone()
            for _ in range(steps):
                current = fn(current, x, y)
            return current

        library = {p: rd.attacks.PGD(0.0, steps=steps, step_size=0.01, random_start=False, precision=p)
                   for p in ("fp32", PRECISIONS.get("fp32").compiled())}
        variants = {"eager step": lambda: k_steps(step), "whole step compiled": lambda: k_steps(compiled_step),
                    "library, model compiled": lambda: library[PRECISIONS.get("fp32").compiled()].run(
                        model, x, y, batch_size=n, progress=False),
                    "library, eager": lambda: library["fp32"].run(model, x, y, batch_size=n, progress=False)}
        first = {}
        for key, fn in variants.items():  # warm-up; compiles the compiled ones
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            first[key] = time.perf_counter() - t0
        times: dict[str, list[float]] = {key: [] for key in variants}
        order = list(variants)
        for r in range(repeats):
            for key in (order if r % 2 == 0 else order[::-1]):
                sync()
                t0 = time.perf_counter()
                variants[key]()
                sync()
                times[key].append(time.perf_counter() - t0)
        difference = (k_steps(compiled_step) - k_steps(step)).abs().max().item()
        eager = statistics.median(times["eager step"])
        for key in variants:
            median = statistics.median(times[key])
            rows.append([f"{name} {'x'.join(map(str, shape[1:]))}", key, f"{first[key]:.1f}", f"{1e3 * median:.1f}",
                         f"{eager / median:.2f}",
                         f"{difference:.1e}" if key == "whole step compiled" else ""])
    lines = [f"# Which part of PGD-{steps} pays to compile ({device})", "",
             "Written by `benchmarks/speed_compile_step.py` (see its docstring for what is timed).", "",
             f"- Command: `{' '.join(shlex.quote(a) for a in ['python', *sys.argv])}`",
             f"- Machine: {machine(device)}; {threads} thread(s)",
             f"- Batch {n} random images, PGD-{steps}, {repeats} interleaved rounds; "
             f"wall time {time.perf_counter() - started:.0f} s", "",
             *markdown_table(["model", "variant", "first call s (compiles)", f"ms per PGD-{steps}",
                              "eager step / variant", "max abs difference to the eager step"], rows)]
    emit("\n".join(lines), out)


if __name__ == "__main__":
    main()
