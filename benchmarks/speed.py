"""Speed goals (run on demand; every ratio comes from timings taken in one run of this script):

(a) our PGD-k per example versus k one-pass input gradients (forward + backward) of the same model
    on the same batch (goal: within 10% of that limit), and versus torchattacks' PGD-k in the peer
    venv on the same TorchScript-traced model and data (goal: no slower). Our PGD returns each
    image's verdict, so it runs a clean forward and a forward of the final iterate beside its k
    passes; torchattacks returns images only. The goal compares ours with torchattacks plus those
    two forwards (an evaluation needs them); the bare ratio is printed too;
(b) our AutoAttack wrapper versus calling pyautoattack directly (goal: within 5%);
(c) one adversarial-training epoch (PGD-k + the training step) versus (k + 1) forward + backward
    passes per example (goal: within 10%): the epoch is one epoch of ``rd.train_teacher("at", ...,
    epochs=1)``, timed by the training loop itself (``model.history``: the epoch without building
    the model before it or validating after it);
(d) in-memory batch iteration (robdistill.data.datasets.iterate_batches) versus torch's DataLoader over a
    TensorDataset, for digits- and MNIST-sized data.

Workloads (``--models``): ``digits`` (the cached digits teachers, standard and AT, 8x8 images; the
only one with (b)); ``compact-cnn`` (the Fashion-MNIST study's network on 28x28 images) and
``resnet18`` (CIFAR-10's on 32x32 RGB), each freshly initialised from seed 0 on uniform random images
of its dataset's shape: the time of a pass does not depend on the weights or the pixels, and no
dataset file is needed. (a) and (c) run on each workload; (c) trains on ``--train-images`` of them
(default 2,048 for compact-cnn and 128 for resnet18). PGD stops attacking an image once it is
fooled, which a random network on random labels would be at once; so (a) labels each image with the
fresh model's own prediction and attacks at ``--synthetic-eps`` (default 1e-4), where no image is
fooled and every step runs on the whole batch: the strictest case for the ratio to the limit.

Timings: median of --repeats runs after one warm-up, torch.set_num_threads(--threads).

    python benchmarks/speed.py --out benchmarks/results/speed_cpu.md
    python benchmarks/speed.py --models compact-cnn,resnet18 --parts a,c
    python benchmarks/speed.py --device cuda --amp bf16   # on a GPU machine
"""
from __future__ import annotations

import json
import shlex
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import click
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (BENCH, DEFAULT_CACHE, DEFAULT_PEER, PEER_HOWTO, digits_model, emit, machine,  # noqa: E402
                     markdown_table, peer_available, run_peer)


class Reported(float):
    """Seconds that a timed function measured itself and returns, counted instead of the wall time
    around the call: a library call timed from the inside (one epoch of ``rd.train_teacher``,
    from its ``model.history``), without the work the library does around what is measured."""


def _seconds(fn: Callable[[], object], sync: Callable[[], object]) -> float:
    sync()
    start = time.perf_counter()
    result = fn()
    sync()
    return result if isinstance(result, Reported) else time.perf_counter() - start


def timed(fn: Callable[[], object], repeats: int, device: str) -> float:
    """Median wall time (or :class:`Reported` time) of ``repeats`` calls after one warm-up call."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    fn()
    return statistics.median(_seconds(fn, sync) for _ in range(repeats))


def timed_pair(a: Callable[[], object], b: Callable[[], object], repeats: int, device: str) -> tuple[float, float, float]:
    """Median times of ``a`` and ``b`` and the median of their per-round ratio a / b, the two
    alternating round by round (AB, then BA) after a warm-up, so load drifts hit both alike (a
    function returning :class:`Reported` seconds is timed by those)."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    a(), b()
    times: dict[str, list[float]] = {"a": [], "b": []}
    for i in range(repeats):
        for name, fn in ((("a", a), ("b", b)) if i % 2 == 0 else (("b", b), ("a", a))):
            times[name].append(_seconds(fn, sync))
    ratios = [x / y for x, y in zip(times["a"], times["b"])]
    return statistics.median(times["a"]), statistics.median(times["b"]), statistics.median(ratios)


def input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One forward + backward pass for the input gradient: the unit PGD repeats k times."""
    leaf = x.detach().requires_grad_(True)
    grad, = torch.autograd.grad(F.cross_entropy(model(leaf), y, reduction="sum"), leaf)
    return grad


def bench_pgd(model, x, y, eps, steps, repeats, device, autocast, peer, threads, workdir) -> list[list[str]]:
    import robdistill as rd

    attack = rd.attacks.PGD(eps, steps=steps)

    def limit():  # k input-gradient passes back to back: the cost PGD-k cannot go below
        for _ in range(steps):
            input_gradient(model, x, y)

    with autocast():
        ours, bound, ratio = timed_pair(lambda: attack.run(model, x, y, batch_size=len(y), progress=False), limit,
                                        max(repeats, 10), device)
    n = len(y)
    rows = [[f"(a) {steps} input-gradient passes (fwd + bwd), back to back", f"{1e6 * bound / n:.1f} µs/example",
             "", ""],
            [f"(a) our PGD-{steps} (interleaved with the line above)", f"{1e6 * ours / n:.1f} µs/example",
             f"{ratio:.3f} x the limit (median of per-round ratios)", "<= 1.10"]]
    if peer is not None:
        # both attacks in the peer process, on the same trace, alternating round by round
        path = run_peer(peer, "time", model, x, y, workdir, eps=eps, steps=steps, threads=threads,
                        repeats=max(repeats, 10), device=device, ours=BENCH.parent)
        timing = json.loads(path.read_text())
        theirs, ours_traced = timing["median_seconds"], timing["ours_median_seconds"]
        rows.append([f"(a) our PGD-{steps} on the TorchScript trace (peer process, interleaved)",
                     f"{1e6 * ours_traced / n:.1f} µs/example", "", ""])
        rows.append([f"(a) torchattacks PGD-{steps} on the same trace, the adversarial images only (peer process, "
                     f"interleaved)", f"{1e6 * theirs / n:.1f} µs/example",
                     f"ours / torchattacks = {timing['median_ratio']:.3f} (median of per-round ratios)", ""])
        rows.append([f"(a) torchattacks PGD-{steps} and the clean and adversarial forwards that give its verdict, as "
                     f"ours gives it (peer process, interleaved)", f"{1e6 * timing['judged_median_seconds'] / n:.1f} µs/example",
                     f"ours / torchattacks judged = {timing['judged_median_ratio']:.3f} (median of per-round ratios)",
                     "<= 1.00"])
    return rows


def bench_autoattack(model, x, y, eps, repeats, device) -> list[list[str]]:
    from pyautoattack import AutoAttack

    import robdistill as rd
    from robdistill.core.modes import preserved_global_rng

    attacks = ["apgd-ce", "apgd-t"]
    wrapper = rd.attacks.build_attack("autoattack", eps, version="custom", attacks=attacks)

    def direct():
        with preserved_global_rng(x.device):
            adversary = AutoAttack(model, eps=eps, norm="Linf", version="custom", attacks=attacks, seed=0,
                                   device=x.device)
            return adversary.run_standard_evaluation(x, y, batch_size=len(y))

    ours, ref, ratio = timed_pair(lambda: wrapper.run(model, x, y, batch_size=len(y), progress=False), direct,
                                  repeats, device)
    return [[f"(b) pyautoattack custom {'+'.join(attacks)} direct", f"{ref:.2f} s ({len(y)} images)", "", ""],
            ["(b) our autoattack wrapper, same run (interleaved with the line above)", f"{ours:.2f} s",
             f"wrapper / direct = {ratio:.3f} (median of per-round ratios)", "<= 1.05"]]


def bench_training(splits, eps, steps, repeats, device, autocast, **recipe_fields) -> list[list[str]]:
    """(c): one epoch of ``rd.train_teacher("at", ..., epochs=1)`` -- a fresh model from the same
    seed each round -- against its limit on a model of the same architecture. The epoch's time is
    the training loop's own (``model.history``), so building the model before the epoch and the
    per-epoch validation after it stay out of the measurement, as in a multi-epoch run.
    ``recipe_fields``: the workload's ``model``, ``batch_size``, ``train_subset``."""
    import robdistill as rd

    recipe = rd.load_recipe("teacher", "at", epochs=1, attack_steps=steps, eps=eps,
                            attack_step_size=2.5 * eps / steps, **recipe_fields)
    train = recipe.training_split(splits.train)
    info = splits.info

    def epoch() -> Reported:
        model = rd.train_teacher(recipe, splits, seed=0, device=device)
        return Reported(model.history[0]["train/epoch_seconds"])

    torch.manual_seed(0)
    model = rd.build_model(recipe.model, info.shape, info.num_classes, info.mean, info.std).to(device)
    batch = recipe.batch_size
    xb, yb = train.x[:batch], train.y[:batch]

    def fwd_bwd():  # the training pass: forward, backward to the parameters, optimiser-free
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(xb), yb).backward()

    n_batches = -(-len(train) // batch)

    def limit_passes():  # per batch: k input-gradient passes (eval mode) + 1 training pass
        for _ in range(n_batches):
            model.eval()
            for _ in range(steps):
                input_gradient(model, xb, yb)
            model.train()
            fwd_bwd()

    with autocast():
        model.train()
        train_pass = timed(fwd_bwd, repeats, device)
        model.eval()
        attack_pass = timed(lambda: input_gradient(model, xb, yb), repeats, device)
        model.train()
        one_epoch, limit, ratio = timed_pair(epoch, limit_passes, max(3, repeats // 2), device)
    return [[f"(c) training pass (fwd + bwd to the weights), batch {batch}", f"{1e6 * train_pass / batch:.1f} µs/example", "", ""],
            [f"(c) input-gradient pass (fwd + bwd to the images), batch {batch}",
             f"{1e6 * attack_pass / batch:.1f} µs/example", "", ""],
            [f"(c) the limit: {steps} input-gradient + 1 training pass per batch, {n_batches} batches",
             f"{limit:.2f} s", "", ""],
            [f"(c) one AT epoch (PGD-{steps}) of rd.train_teacher, {len(train)} examples, {recipe.model} (interleaved with the "
             f"line above)", f"{one_epoch:.2f} s", f"{ratio:.3f} x the limit (median of per-round ratios)", "<= 1.10"]]


def bench_batches(repeats: int) -> list[list[str]]:
    from torch.utils.data import DataLoader, TensorDataset

    import robdistill as rd
    from robdistill.data.datasets import iterate_batches

    digits = rd.load_dataset("digits").train
    g = torch.Generator().manual_seed(0)
    mnist = rd.Split(torch.rand(60000, 1, 28, 28, generator=g), torch.randint(10, (60000,), generator=g))
    rows = []
    for name, split, batch in (("digits", digits, 64), ("MNIST-sized", mnist, 128)):
        def ours():
            for _ in iterate_batches(split, batch, torch.Generator().manual_seed(0)):
                pass

        loader = DataLoader(TensorDataset(split.x, split.y), batch_size=batch, shuffle=True,
                            generator=torch.Generator().manual_seed(0))

        def theirs():
            for _ in loader:
                pass

        t_ours, t_loader = timed(ours, repeats, "cpu"), timed(theirs, repeats, "cpu")
        rows.append([f"(d) {name} ({len(split)} x {tuple(split.x.shape[1:])}, batch {batch}) epoch: "
                     f"iterate_batches / DataLoader", f"{1e3 * t_ours:.1f} ms vs {1e3 * t_loader:.1f} ms",
                     f"DataLoader / ours = {t_loader / t_ours:.1f}", ""])
    return rows


#: (dataset whose shape and radius it takes, model, (a)'s images per batch, (c)'s batch size, (c)'s images)
WORKLOADS = {"compact-cnn": ("fashion-mnist", "compact-cnn", 256, 128, 2048),
             "resnet18": ("cifar10", "resnet18", 32, 32, 128)}


def synthetic_splits(dataset: str, n_train: int, n_eval: int, device: str):
    """Splits of uniform random images and labels (seed 0) in ``dataset``'s shape, with its facts."""
    import robdistill as rd
    from robdistill.data.datasets import DATASETS

    info = DATASETS.get(dataset)
    g = torch.Generator().manual_seed(0)

    def split(n: int) -> rd.Split:
        return rd.Split(torch.rand(n, *info.shape, generator=g), torch.randint(info.num_classes, (n,), generator=g))

    return rd.Splits(info, split(n_train), split(min(n_eval, 64)), split(n_eval)).to(device)


def fresh_model(name: str, info, device: str) -> nn.Module:
    """``name`` built as a recipe builds it, from seed 0, in eval mode with frozen weights."""
    import robdistill as rd

    torch.manual_seed(0)
    model = rd.build_model(name, info.shape, info.num_classes, info.mean, info.std).to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@click.command()
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1 ...")
@click.option("--amp", type=click.Choice(["none", "bf16"]), default="none", show_default=True,
              help="bf16 autocast around (a) and (c) (CUDA only; the attack steps stay in float32 pixels).")
@click.option("--channels-last", is_flag=True,
              help="channels_last memory format for model and images in (a) and (b) ((c) trains through "
                   "rd.train_teacher, which builds its model in the default format).")
@click.option("--threads", default=1, show_default=True)
@click.option("--repeats", default=5, show_default=True)
@click.option("--steps", default=10, show_default=True, help="k of PGD-k in (a) and (c).")
@click.option("--n", "n_eval", default=256, show_default=True, help="Images per batch in (a) and (b).")
@click.option("--aa-n", default=64, show_default=True, help="Images in (b).")
@click.option("--parts", default="a,b,c,d", show_default=True)
@click.option("--models", default="digits", show_default=True,
              help="Workloads, comma-separated: digits, compact-cnn, resnet18 (see the module's docstring).")
@click.option("--train-images", default=0, show_default=True,
              help="Training images of (c) on compact-cnn and resnet18 (0: the workload's default; digits "
                   "trains on its whole split).")
@click.option("--synthetic-eps", default=1e-4, show_default=True,
              help="The radius of (a) on compact-cnn and resnet18 (small: no image is fooled).")
@click.option("--cache", type=click.Path(path_type=Path), default=DEFAULT_CACHE, show_default=True)
@click.option("--peer", type=click.Path(path_type=Path), default=DEFAULT_PEER, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None)
def main(device, amp, channels_last, threads, repeats, steps, n_eval, aa_n, parts, models, train_images, synthetic_eps,
         cache, peer, out) -> None:
    import robdistill as rd

    torch.set_num_threads(threads)
    if amp != "none" and not device.startswith("cuda"):
        raise click.UsageError("--amp bf16 is for CUDA devices")
    started = time.perf_counter()
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if amp == "bf16" else nullcontext
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    workloads = [m.strip() for m in models.split(",") if m.strip()]
    unknown = sorted(set(workloads) - {"digits", *WORKLOADS})
    if unknown:
        raise click.UsageError(f"unknown workload {unknown[0]}; choose from digits, {', '.join(WORKLOADS)}")
    has_peer = peer_available(peer)
    rows: list[list[str]] = []
    described: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        if "digits" in workloads:
            splits = rd.load_dataset("digits", device=device)
            eps = 0.1
            x, y = splits.test.x[:n_eval].contiguous(memory_format=fmt), splits.test.y[:n_eval]
            described.append(f"digits: eps {eps}, {len(y)} test images per batch in (a)")
            for teacher in ("standard", "at") if "a" in parts or "b" in parts else ():  # (c), (d) need no teacher
                model = digits_model(teacher, cache, device=device).to(memory_format=fmt)
                if "a" in parts:
                    rows += [[f"[{teacher}] {r[0]}", *r[1:]] for r in
                             bench_pgd(model, x, y, eps, steps, repeats, device, autocast, peer if has_peer else None,
                                       threads, Path(tmp) / teacher)]
                if "b" in parts and teacher == "at":
                    rows += [[f"[{teacher}] {r[0]}", *r[1:]] for r in
                             bench_autoattack(model, x[:aa_n], y[:aa_n], eps, max(3, repeats // 2), device)]
            if "c" in parts:
                training = bench_training(splits, eps, steps, repeats, device, autocast)
                if channels_last:  # rd.train_teacher builds its model in the default memory format
                    training = [[f"{r[0]} (default memory format)", *r[1:]] for r in training]
                rows += training
        for workload in (w for w in workloads if w != "digits"):
            dataset, model_name, batch, train_batch, default_images = WORKLOADS[workload]
            splits = synthetic_splits(dataset, train_images or default_images, batch, device)
            eps = splits.info.eps
            described.append(f"{workload}: {dataset}-shaped {tuple(splits.info.shape)} random images; (a) "
                             f"{batch} per batch, labelled with the model's predictions, eps {synthetic_eps:g}; "
                             f"(c) {len(splits.train)} training images in batches of {train_batch}, eps {eps:.4g}")
            if "a" in parts:
                model = fresh_model(model_name, splits.info, device).to(memory_format=fmt)
                x = splits.test.x.contiguous(memory_format=fmt)
                with torch.no_grad():
                    y = model(x).argmax(1)  # every image starts correct: PGD attacks the whole batch
                rows += [[f"[{workload}] {r[0]}", *r[1:]] for r in
                         bench_pgd(model, x, y, synthetic_eps, steps, repeats, device, autocast,
                                   peer if has_peer else None, threads, Path(tmp) / workload)]
            if "c" in parts:
                rows += [[f"[{workload}] {r[0]}", *r[1:]] for r in
                         bench_training(splits, eps, steps, repeats, device, autocast, model=model_name,
                                        batch_size=train_batch)]
    if "d" in parts:
        rows += bench_batches(repeats)
    header = ["measurement", "time", "ratio", "goal"]
    lines = [f"# Speed benchmark ({device}{', bf16 autocast' if amp == 'bf16' else ''}"
             f"{', channels_last' if channels_last else ''})", "",
             f"Command: `{' '.join(shlex.quote(a) for a in ['python', *sys.argv])}`  ",
             f"Machine: {machine(device)}  ",
             f"torch.set_num_threads({threads}); median of {repeats} timings after a warm-up; PGD-{steps}.  ",
             *(f"Workload {d}.  " for d in described),
             f"Wall time: {time.perf_counter() - started:.0f} s", ""]
    if not has_peer:
        lines += [f"torchattacks peer venv not found at {peer}: skipped. Create it with `{PEER_HOWTO}`.", ""]
    lines += markdown_table(header, rows)
    emit("\n".join(lines), out)


if __name__ == "__main__":
    main()
