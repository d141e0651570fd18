"""Runs torchattacks' PGD in the separate peer venv (never in the project's environment: its
``autoattack`` module shadows pyautoattack's name). Called by pgd_reference.py and speed.py:

    /work/peer/bin/python benchmarks/peer_torchattacks.py flags MODEL.ts DATA.pt OUT.pt --eps .1 --steps 20
    /work/peer/bin/python benchmarks/peer_torchattacks.py flags MODEL.ts DATA.pt OUT.pt --eps .2 --steps 20 --norm l2
    /work/peer/bin/python benchmarks/peer_torchattacks.py autoattack MODEL.ts DATA.pt OUT.pt --eps .2 --norm l2
    /work/peer/bin/python benchmarks/peer_torchattacks.py time MODEL.ts DATA.pt OUT.json --eps .1 --steps 20

``time`` with ``--ours REPO`` also times robdistill's PGD (imported from REPO; it needs only torch
and tqdm) on the same traced model in the same process, alternating the two attacks round by
round (ABAB, then BABA), so drifts in machine load hit both alike; it writes both medians and
the median of the per-round ratios.

MODEL.ts is a TorchScript trace of the model (inputs in [0, 1]); DATA.pt holds {"x", "y"}. ``flags``
writes {"robust", "x_adv"} (robust = correct on the clean and on the final PGD iterate; ``--norm l2``
runs torchattacks' PGDL2); ``autoattack`` runs torchattacks' own AutoAttack re-implementation
(version standard, ``--norm``) and writes the same; ``time``
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
    parser.add_argument("mode", choices=("flags", "time", "autoattack"))
    parser.add_argument("model")
    parser.add_argument("data")
    parser.add_argument("out")
    parser.add_argument("--eps", type=float, required=True)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--step-size", type=float, default=None)
    parser.add_argument("--norm", choices=("linf", "l2"), default="linf")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--ours", default=None, help="robdistill checkout: time its PGD interleaved")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = torch.jit.load(args.model, map_location=args.device).eval()
    data = torch.load(args.data)
    x, y = data["x"].to(args.device), data["y"].to(args.device)
    alpha = args.step_size if args.step_size is not None else 2.5 * args.eps / args.steps
    if args.mode == "autoattack":
        torch.manual_seed(args.seed)
        attack = torchattacks.AutoAttack(model, norm={"linf": "Linf", "l2": "L2"}[args.norm], eps=args.eps,
                                         version="standard", n_classes=int(model(x[:1]).shape[1]), seed=args.seed)
    elif args.norm == "l2":
        attack = torchattacks.PGDL2(model, eps=args.eps, alpha=alpha, steps=args.steps, random_start=True)
    else:
        attack = torchattacks.PGD(model, eps=args.eps, alpha=alpha, steps=args.steps, random_start=True)
    if args.mode in ("flags", "autoattack"):
        torch.manual_seed(args.seed)  # torchattacks draws its random start from the global RNG
        x_adv = attack(x, y)
        with torch.no_grad():
            robust = (model(x).argmax(1) == y) & (model(x_adv).argmax(1) == y)
        torch.save({"robust": robust.cpu(), "x_adv": x_adv.cpu()}, args.out)
        return
    if args.ours is not None:
        return time_interleaved(args, model, x, y, alpha, attack)
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


def time_interleaved(args, model, x, y, alpha, attack) -> None:
    import sys

    sys.path.insert(0, args.ours)
    from robdistill.attacks import PGD

    ours = PGD(args.eps, steps=args.steps, step_size=alpha)

    def judged() -> torch.Tensor:  # torchattacks' PGD and the two forwards that give its verdict, as ours does
        x_adv = attack(x, y)
        with torch.no_grad():
            return (model(x).argmax(1) == y) & (model(x_adv).argmax(1) == y)

    run = {"ours": lambda: ours.run(model, x, y, batch_size=len(y), progress=False),
           "torchattacks": lambda: attack(x, y), "judged": judged}

    def once(name: str) -> float:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        run[name]()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for name in run:  # warm-up
        once(name)
    times: dict[str, list[float]] = {name: [] for name in run}
    order = list(run)
    for i in range(args.repeats):
        for name in (order if i % 2 == 0 else order[::-1]):
            times[name].append(once(name))
    ratios = [a / b for a, b in zip(times["ours"], times["torchattacks"])]
    judged_ratios = [a / b for a, b in zip(times["ours"], times["judged"])]
    with open(args.out, "w") as f:
        json.dump({"median_seconds": statistics.median(times["torchattacks"]),
                   "ours_median_seconds": statistics.median(times["ours"]),
                   "judged_median_seconds": statistics.median(times["judged"]),
                   "median_ratio": statistics.median(ratios), "judged_median_ratio": statistics.median(judged_ratios),
                   "times": times,
                   "torchattacks": torchattacks.__version__, "torch": torch.__version__}, f)


if __name__ == "__main__":
    main()
