"""Does crafting in bf16 weaken the attacks? (issue 16, "proof that bf16 does not weaken attacks")

For every checkpoint of a study cache (teachers and students of one dataset), every attack of a
suite runs twice on the same test images with the same seed: crafted in fp32, and crafted in bf16
(``robdistill.core.precision``: autocast + channels-last; the verdicts are fp32 in both). Per model
and attack it records the robust counts and the discordant samples:

- ``bf16 only``: robust under bf16 crafting, fooled under fp32 crafting (bf16 *weaker* there);
- ``fp32 only``: the other way round (bf16 stronger there),

with McNemar's exact p over the discordant pairs. Pooled over models, an attack is called weaker
in bf16 if ``bf16 only`` exceeds ``fp32 only`` with p < 0.05 (then keep it fp32). Results go to a
JSON file, one entry per (checkpoint, attack) as soon as it is measured, so a killed run resumes.

    python benchmarks/bf16_agreement.py run --cache /work/tstudy/cache --dataset digits \\
        --out benchmarks/results/bf16_agreement_digits.json
    python benchmarks/bf16_agreement.py report benchmarks/results/bf16_agreement_digits.json \\
        --out benchmarks/results/bf16_agreement.md
"""
from __future__ import annotations

import json
import platform
import shlex
import sys
import time
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parent))
from teacher_study import save_results as _save  # noqa: E402  (atomic JSON write, resumable files)

HEADER = ["model", "attack", "n", "fp32 robust", "bf16 robust", "bf16 only (weaker)", "fp32 only (stronger)",
          "McNemar p"]


@click.group()
def main() -> None:
    """bf16-crafted against fp32-crafted attack flags on every model of a study cache."""


@main.command()
@click.option("--cache", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="A robdistill cache dir (its teachers/ and students/ checkpoints are measured).")
@click.option("--dataset", default="digits", show_default=True)
@click.option("--suite", default="cpu-image", show_default=True,
              help="Suite whose attacks are compared (FGSM is skipped: one step, nothing to weaken).")
@click.option("--n", "n_eval", default=0, show_default=True, help="First N test images for PGD / CW (0 = all).")
@click.option("--aa-n", default=100, show_default=True, help="First N test images for AutoAttack.")
@click.option("--pattern", "patterns", multiple=True, default=["*"], show_default=True,
              help="Only checkpoints whose file name matches this glob after '<dataset>-' (e.g. '*-s0-*'; "
                   "repeatable).")
@click.option("--limit", default=0, show_default=True, help="At most this many checkpoints (0 = all), in name order.")
@click.option("--threads", default=1, show_default=True)
@click.option("--device", default="cpu", show_default=True,
              help="cpu or cuda[:i]: where the models, the images and both craftings run (verdicts stay fp32).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Results JSON (appended, resumable).")
def run(cache: Path, dataset: str, suite: str, n_eval: int, aa_n: int, patterns: tuple[str, ...], limit: int,
        threads: int, device: str, out: Path) -> None:
    """Measure every checkpoint x attack not yet in --out."""
    import torch

    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise click.UsageError(f"--device {device}: CUDA is not available here")

    import robdistill as rd
    from robdistill.core.precision import native_bf16
    from robdistill.data.datasets import dataset_step_ratio
    from robdistill.eval.runner import suite_attacks, suite_eps
    from robdistill.models.checkpoints import load_checkpoint

    torch.set_num_threads(threads)
    results = json.loads(out.read_text()) if out.is_file() else {"entries": {}, "invocations": []}
    invocation = {"command": " ".join(shlex.quote(a) for a in ["python", *sys.argv]),
                  "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": threads,
                              "native_bf16_cpu": native_bf16("cpu"), "device": device,
                              **({"gpu": torch.cuda.get_device_name(torch.device(device)),
                                  "native_bf16_cuda": native_bf16("cuda")}
                                 if torch.device(device).type == "cuda" else {})},
                  "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    results["invocations"].append(invocation)
    data = rd.load_dataset(dataset)
    recipe = rd.load_recipe("suite", suite)
    eps = suite_eps(recipe, data.info)
    ratio = dataset_step_ratio(dataset)
    crafted = {p: suite_attacks(rd.load_recipe("suite", recipe, precision=p), eps, ratio) for p in ("fp32", "bf16")}
    paths = sorted({path for pattern in patterns for folder in ("teachers", "students")
                    for path in cache.glob(f"{folder}/{dataset}-{pattern}.pt")})
    paths = paths[:limit] if limit else paths
    if not paths:
        raise click.UsageError(f"no {dataset} checkpoints under {cache}/teachers or {cache}/students")
    started = time.perf_counter()
    for number, path in enumerate(paths, 1):
        model = None
        for key in crafted["fp32"]:
            if crafted["fp32"][key].name == "fgsm":
                continue
            entry_key = f"{path.name}/{key}"
            if entry_key in results["entries"]:
                continue
            if model is None:
                model, _ = load_checkpoint(path)
                model.to(device).eval()
            n = aa_n if crafted["fp32"][key].chunked else (n_eval or len(data.test))
            x, y = data.test.x[:n].to(device), data.test.y[:n].to(device)
            flags, seconds = {}, {}
            for precision in ("fp32", "bf16"):
                t0 = time.perf_counter()
                flags[precision] = crafted[precision][key].run(model, x, y, batch_size=recipe.batch_size,
                                                               progress=False).robust.cpu()  # waits for the GPU
                seconds[precision] = time.perf_counter() - t0
            results["entries"][entry_key] = {
                "checkpoint": path.name, "kind": path.parent.name, "attack": key, "n": n,
                "config": crafted["bf16"][key].config(), "seconds": seconds,
                "fp32": pack_flags(flags["fp32"].tolist()), "bf16": pack_flags(flags["bf16"].tolist())}
            invocation["wall_seconds"] = time.perf_counter() - started
            _save(out, results)
            a, b = flags["fp32"], flags["bf16"]
            click.echo(f"[{number}/{len(paths)}] {path.name} {key}: fp32 {int(a.sum())}/{n}, bf16 {int(b.sum())}/{n}, "
                       f"bf16 only {int((b & ~a).sum())}, fp32 only {int((a & ~b).sum())} "
                       f"({seconds['fp32']:.0f} s / {seconds['bf16']:.0f} s)", err=True)
    invocation["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    invocation["wall_seconds"] = time.perf_counter() - started
    _save(out, results)


def pack_flags(flags: list) -> str:
    """Per-sample 0/1 flags as hexadecimal, 4 samples a digit, the first sample in the highest bit
    (a JSON list of ints took about 3 bytes a sample: the Fashion-MNIST file was 2.7 MB)."""
    bits = "".join("1" if f else "0" for f in flags)
    padded = bits + "0" * (-len(bits) % 4)
    return "".join(f"{int(padded[i:i + 4], 2):x}" for i in range(0, len(padded), 4))


def unpack_flags(packed: str | list, n: int) -> list[int]:
    """The flags :func:`pack_flags` wrote (or a list of ints, as files before it hold them)."""
    if isinstance(packed, list):
        return [int(f) for f in packed]
    bits = "".join(f"{int(digit, 16):04b}" for digit in packed)
    return [int(b) for b in bits[:n]]


def _row(name: str, attack: str, fp32: list[int], bf16: list[int]) -> list[str]:
    from robdistill.core.stats import mcnemar_exact

    weaker = sum(1 for a, b in zip(fp32, bf16) if b and not a)
    stronger = sum(1 for a, b in zip(fp32, bf16) if a and not b)
    return [name, attack, str(len(fp32)), str(sum(fp32)), str(sum(bf16)), str(weaker), str(stronger),
            f"{mcnemar_exact(fp32, bf16):.3g}"]


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write the Markdown here too.")
def report(files: tuple[Path, ...], out: Path | None) -> None:
    """Per-model and pooled tables, with the verdict per attack."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import markdown_table

    lines = ["# bf16-crafted versus fp32-crafted attacks: agreement (issue 16)", "",
             "Generated by `python benchmarks/bf16_agreement.py report "
             + " ".join(str(f) for f in files) + "`; how each file was measured:", ""]
    pooled: dict[str, tuple[list[int], list[int]]] = {}
    rows = []
    for path in files:
        results = json.loads(path.read_text())
        for invocation in results["invocations"]:
            lines.append(f"- `{invocation['command']}` ({invocation.get('started')}, "
                         f"{invocation.get('wall_seconds', 0) / 60:.0f} min; {invocation['machine']})")
        for entry in results["entries"].values():
            fp32, bf16 = (unpack_flags(entry[p], entry["n"]) for p in ("fp32", "bf16"))
            rows.append(_row(entry["checkpoint"], entry["attack"], fp32, bf16))
            a, b = pooled.setdefault(entry["attack"], ([], []))
            a.extend(fp32)
            b.extend(bf16)
    lines += ["", "## Pooled over every model (one verdict per attack)", ""]
    pooled_rows = []
    for attack, (a, b) in pooled.items():
        row = _row("all models", attack, a, b)
        weaker, stronger, p = int(row[5]), int(row[6]), float(row[7])
        verdict = ("WEAKER in bf16: keep it fp32" if weaker > stronger and p < 0.05 else
                   "not weaker (no significant excess of bf16-only survivors)")
        pooled_rows.append([*row[1:], verdict])
    lines += markdown_table([*HEADER[1:], "verdict"], pooled_rows)
    lines += ["", "## Per model", "", *markdown_table(HEADER, rows), ""]
    text = "\n".join(lines)
    click.echo(text)
    if out is not None:
        out.write_text(text)


if __name__ == "__main__":
    main()
