"""Runs torchattacks' PGD in the separate peer venv (never in the project's environment: its
``autoattack`` module shadows pyautoattack's name). Called by pgd_reference.py and speed.py:

    /work/peer/bin/python benchmarks/peer_torchattacks.py flags MODEL.ts DATA.pt OUT.pt --eps .1 --steps 20
    /work/peer/bin/python benchmarks/peer_torchattacks.py time MODEL.ts DATA.pt OUT.json --eps .1 --steps 20

MODEL.ts is a TorchScript trace of the model (inputs in [0, 1]); DATA.pt holds {"x", "y"}. ``flags``
writes {"robust", "x_adv"} (robust = correct on the clean and on the final PGD iterate); ``time``
writes the median wall time of --repeats runs after one warm-up. Needs only torch and torchattacks.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torchattacks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("flags", "time"))
    parser.add_argument("model")
    parser.add_argument("data")
    parser.add_argument("out")
    parser.add_argument("--eps", type=float, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--step-size", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = torch.jit.load(args.model, map_location=args.device).eval()
    data = torch.load(args.data)
    x, y = data["x"].to(args.device), data["y"].to(args.device)
    alpha = args.step_size if args.step_size is not None else 2.5 * args.eps / args.steps
    attack = torchattacks.PGD(model, eps=args.eps, alpha=alpha, steps=args.steps, random_start=True)
    if args.mode == "flags":
        torch.manual_seed(args.seed)  # torchattacks draws its random start from the global RNG
        x_adv = attack(x, y)
        with torch.no_grad():
            robust = (model(x).argmax(1) == y) & (model(x_adv).argmax(1) == y)
        torch.save({"robust": robust.cpu(), "x_adv": x_adv.cpu()}, args.out)
        return
    times = []
    for i in range(args.repeats + 1):
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        attack(x, y)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        if i:  # the first run is the warm-up
            times.append(time.perf_counter() - start)
    with open(args.out, "w") as f:
        json.dump({"median_seconds": statistics.median(times), "times": times,
                   "torchattacks": torchattacks.__version__, "torch": torch.__version__}, f)


if __name__ == "__main__":
    main()
