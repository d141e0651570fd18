"""Shared helpers of the benchmarks: machine description, cached digits models trained with
robdistill's own teacher API, and calls into the torchattacks peer venv."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

BENCH = Path(__file__).resolve().parent
DEFAULT_CACHE = BENCH / ".cache"
DEFAULT_PEER = Path(os.environ.get("ROBDISTILL_PEER", "/work/peer/bin/python"))
PEER_HOWTO = ("python3 -m venv /work/peer && /work/peer/bin/pip install -c constraints.txt torch numpy scipy "
              "tqdm requests && /work/peer/bin/pip install --no-deps torchattacks==3.5.1")


def machine(device: str = "cpu") -> str:
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") and torch.cuda.is_available() else "cpu"
    return (f"{platform.platform()}, python {platform.python_version()}, torch {torch.__version__}, "
            f"{os.cpu_count()} CPUs (torch threads {torch.get_num_threads()}), device {device} ({name})")


def digits_model(teacher: str, cache: Path, seed: int = 0, device: str = "cpu",
                 overrides: list[str] | None = None) -> nn.Module:
    """A digits teacher (recipe ``teacher``) trained once by robdistill and cached under ``cache``
    (its own MLflow store there too)."""
    import robdistill as rd
    from robdistill.catalog import checked_recipe
    from robdistill.experiments.stages import obtain_teacher
    from robdistill.tracking.store import configure

    cache.mkdir(parents=True, exist_ok=True)
    configure(f"sqlite:///{cache / 'mlflow.db'}", "benchmarks")
    settings = rd.Settings(dataset="digits", seed=seed, device=device, cache_dir=cache, progress=False,
                           use_registry=False)
    splits = rd.load_dataset("digits", device=device)
    handle = obtain_teacher(checked_recipe("teacher", teacher, overrides or []), splits, settings)
    model = handle.model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def random_model_and_batch(name: str, shape: tuple[int, ...], mean: tuple[float, ...], std: tuple[float, ...], n: int,
                           device: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A model of the zoo initialised from seed 0 (eval mode, frozen), ``n`` uniform random images of
    ``shape`` and, as their labels, the model's own predictions: every image enters an attack."""
    import robdistill as rd

    torch.manual_seed(0)
    model = rd.build_model(name, shape, 10, mean, std).to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.rand(n, *shape, device=device)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def peer_available(peer: Path) -> bool:
    if not peer.is_file():
        return False
    probe = subprocess.run([str(peer), "-c", "import torch, torchattacks"], capture_output=True)
    return probe.returncode == 0


def run_peer(peer: Path, mode: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, workdir: Path,
             **options: object) -> Path:
    """Trace ``model`` to TorchScript, save (x, y), run peer_torchattacks.py in the peer venv."""
    workdir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated but still the portable format
        traced = torch.jit.trace(model, x[:2])
    traced.save(str(workdir / "model.ts"))
    torch.save({"x": x.detach().cpu(), "y": y.detach().cpu()}, workdir / "data.pt")
    out = workdir / ("flags.pt" if mode == "flags" else "time.json")
    args = [str(peer), str(BENCH / "peer_torchattacks.py"), mode, str(workdir / "model.ts"),
            str(workdir / "data.pt"), str(out)]
    for key, value in options.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    done = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise RuntimeError(f"the peer torchattacks run failed (exit {done.returncode})")
    return out


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table, as lines."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def emit(report: str, out: Path | None) -> None:
    """Print a results report and, with ``out``, write it there."""
    import click

    click.echo(report)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report + "\n")
