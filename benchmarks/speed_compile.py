"""Compiled against eager attacks (``--compile``, issue 33 item 4) on this machine: our PGD-k crafted
through ``torch.compile`` of the model (the library's ``fp32+compile`` precision: crafting compiled,
verdicts eager fp32) against the same PGD-k eager, on one batch, timed interleaved by
``speed.timed_pair`` (a warm-up of each, which for the compiled one includes compiling; then
``--repeats`` rounds alternating AB / BA; the ratio is the median of the per-round ratios eager /
compiled, so > 1 means compiling is faster). The compilation is timed apart: the first call.

Models are random-init ``small-cnn`` on 8x8 digits images and ``compact-cnn`` / ``small-cnn`` on
random 1x28x28 images (Fashion-MNIST-shaped), attacked at eps 0 on their own predictions (no image is
ever fooled, so every image gets all k steps: the cost on a perfectly robust model).

    OMP_NUM_THREADS=1 python benchmarks/speed_compile.py --out benchmarks/results/speed_compile_cpu.md
    python benchmarks/speed_compile.py --device cuda --n 1024 --out benchmarks/results/speed_compile_cuda.md
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import click
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine, markdown_table, random_model_and_batch  # noqa: E402
from speed import timed_pair  # noqa: E402

MODELS = (("small-cnn", "digits", (1, 8, 8)), ("compact-cnn", "fashion-mnist", (1, 28, 28)),
          ("small-cnn", "fashion-mnist", (1, 28, 28)))


@click.command()
@click.option("--n", default=256, show_default=True, help="Images per batch.")
@click.option("--steps", default=10, show_default=True, help="PGD steps.")
@click.option("--repeats", default=5, show_default=True, help="Interleaved rounds.")
@click.option("--threads", default=1, show_default=True, help="torch threads.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None)
def main(n: int, steps: int, repeats: int, threads: int, device: str, out: Path | None) -> None:
    import robdistill as rd
    from robdistill.core.precision import PRECISIONS

    torch.set_num_threads(threads)
    compiled_precision = PRECISIONS.get("fp32").compiled()
    rows = []
    started = time.perf_counter()
    for name, dataset, shape in MODELS:
        info = rd.load_dataset(dataset).info if dataset == "digits" else None
        mean, std = (info.mean, info.std) if info else ((0.2860,), (0.3530,))
        model, x, y = random_model_and_batch(name, shape, mean, std, n, device)
        eager = rd.attacks.PGD(0.0, steps=steps, step_size=0.01)
        compiled = rd.attacks.PGD(0.0, steps=steps, step_size=0.01, precision=compiled_precision)
        t0 = time.perf_counter()
        flags_c = compiled.run(model, x, y, batch_size=n, progress=False).robust
        first = time.perf_counter() - t0
        flags_e = eager.run(model, x, y, batch_size=n, progress=False).robust
        te, tc, ratio = timed_pair(lambda: eager.run(model, x, y, batch_size=n, progress=False),
                                   lambda: compiled.run(model, x, y, batch_size=n, progress=False), repeats, device)
        rows.append([f"{name} {'x'.join(map(str, shape[1:]))}", f"{first:.1f}", f"{te * 1e3:.1f}", f"{tc * 1e3:.1f}",
                     f"{ratio:.2f}", "yes" if torch.equal(flags_c, flags_e) else "NO"])
    lines = [f"# Compiled against eager PGD-{steps} ({device})", "",
             "Written by `benchmarks/speed_compile.py` (see its docstring for what is timed).", "",
             f"- Command: `{' '.join(['python benchmarks/speed_compile.py', *sys.argv[1:]])}`",
             f"- Machine: {machine(device)}; {threads} thread(s); torch {torch.__version__}",
             f"- Batch {n} images, PGD-{steps} at eps 0 (every image gets every step), {repeats} interleaved rounds; "
             f"wall time {time.perf_counter() - started:.0f} s", "",
             *markdown_table(["model", "first compiled call s (compiles)", f"eager ms per PGD-{steps}",
                              f"compiled ms per PGD-{steps}", "eager / compiled", "same flags"], rows), ""]
    emit("\n".join(lines), out)


if __name__ == "__main__":
    main()
