"""What a suite costs per model, measured: every attack of the suite on a teacher and on its student
(a transfer attack from ``"teacher"`` crafts on the teacher), with the seconds per attack and the
accuracies. The study budgets in ``benchmarks/results/`` quote it next to `--estimate`.

Usage (the Fashion-MNIST study's suite on a cached AT teacher and its keep student, one thread)::

    OMP_NUM_THREADS=1 python benchmarks/suite_cost.py --dataset fashion-mnist --suite fmnist-study \\
        --teacher <cache>/teachers/fashion-mnist-at-....pt --student <cache>/students/fashion-mnist-at-keep-....pt \\
        --role teacher
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    import torch

    import robdistill as rd
    from robdistill.data.datasets import DATASETS, dataset_step_ratio, load_dataset
    from robdistill.eval.runner import run_suite, suite_eps
    from robdistill.models.checkpoints import load_checkpoint

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--suite", required=True)
    parser.add_argument("--teacher", type=Path, required=True, help="a robdistill checkpoint")
    parser.add_argument("--student", type=Path, help="a robdistill checkpoint (its evaluation: --role keep ...)")
    parser.add_argument("--role", default="teacher",
                        help="which model to time: 'teacher', or the student's perturbation (keep, onehot ...)")
    args = parser.parse_args()
    teacher, _ = load_checkpoint(args.teacher)
    model = teacher if args.role == "teacher" else load_checkpoint(args.student)[0]
    splits = load_dataset(args.dataset)
    suite = rd.load_recipe("suite", args.suite).for_subject(args.role)
    eps = suite_eps(suite, DATASETS.get(args.dataset))
    test = splits.test.head(suite.n_eval or None)
    started = time.perf_counter()
    result = run_suite(model, test, suite, eps, name=args.role, progress=False,
                      step_ratio=dataset_step_ratio(args.dataset), surrogates={"teacher": teacher})
    print(f"{args.role}: {time.perf_counter() - started:.1f} s in all at {torch.get_num_threads()} thread(s)")
    print("seconds per attack:", json.dumps({k: round(v, 1) for k, v in result.seconds.items()}))
    print(result.table)
    print("sanity checks:", "all passed" if result.passed else [c.name for c in result.checks if not c.passed])


if __name__ == "__main__":
    main()
