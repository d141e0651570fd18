"""Teacher study (issue 3): train every teacher objective and attack it with one suite, over seeds.

Each (dataset, teacher, seed) is trained once (the teacher cache), attacked, and appended to a JSON
results file as soon as it finishes, so an interrupted study resumes where it stopped. ``report``
turns one or more results files into Markdown tables: per objective, clean / FGSM / PGD / CW /
AutoAttack accuracy (mean over seeds with a 95% t-interval, or the 95% Wilson interval for a single
seed), and the AALP paper's Table 2 ordering AT < ALP < AALP checked per attack with paired tests.

    python benchmarks/teacher_study.py run --dataset digits --seeds 0,1,2 --suite full \\
        --out benchmarks/results/teacher_study_digits.json
    python benchmarks/teacher_study.py report benchmarks/results/teacher_study_*.json
"""
from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import click

ALL_TEACHERS = ("standard", "at", "mpgd", "alp", "clp", "lsq", "aalp-gd", "aalp-sw", "aalp", "trades")
METRICS = ("clean", "fgsm", "pgd", "cw", "autoattack", "worst")
ORDERING = ("at", "alp", "aalp")  # AALP paper, Table 2: AT < ALP < AALP under PGD and CW
STAGE_STUDY = "study"  # the study's parent run: its own value of the schema's ``stage`` tag


def machine(device: str) -> dict[str, object]:
    import torch

    name = torch.cuda.get_device_name(0) if device.startswith("cuda") and torch.cuda.is_available() else "cpu"
    return {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": f"{device} ({name})"}


def load_results(path: Path) -> dict:
    if path.is_file():
        return json.loads(path.read_text())
    return {"entries": {}, "invocations": []}


def save_results(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(path)


@click.group()
def main() -> None:
    """Teacher study: every objective, one attack suite, several seeds."""


@main.command()
@click.option("--dataset", default="digits", show_default=True)
@click.option("--teachers", default=",".join(ALL_TEACHERS), show_default=True)
@click.option("--seeds", default="0,1,2", show_default=True)
@click.option("--suite", default="full", show_default=True)
@click.option("--n-eval", type=int, default=None, help="First N test images [default: the suite's].")
@click.option("--set", "overrides", multiple=True, help="Teacher recipe override for every teacher (repeatable).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Results JSON (appended, resumable).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--quiet", is_flag=True)
def run(dataset, teachers, seeds, suite, n_eval, overrides, out, device, quiet) -> None:
    """Train (or reuse) and attack each teacher x seed; results appended to --out."""
    import robdistill as rd
    from robdistill.config.overrides import Overrides
    from robdistill.experiments.pipeline import make_plan
    from robdistill.experiments.stages import evaluate_model, obtain_teacher
    from robdistill.tracking import schema
    from robdistill.tracking.store import configure, tracked_run

    results = load_results(out)
    invocation = {"command": " ".join(shlex.quote(a) for a in ["python", *sys.argv]), "machine": machine(device),
                  "started": time.strftime("%Y-%m-%d %H:%M:%S"), "wall_seconds": None}
    results["invocations"].append(invocation)
    started = time.perf_counter()
    uri = configure(None, "teacher-study")
    study_tags = schema.stage_tags(STAGE_STUDY, {schema.TAG_DATASET: dataset})
    with tracked_run(f"teacher study on {dataset}", tags=study_tags):
        for seed in [int(s) for s in seeds.split(",")]:
            settings = rd.Settings(dataset=dataset, seed=seed, device=device, experiment="teacher-study",
                                   progress=not quiet)
            for teacher in teachers.split(","):
                key = "/".join([dataset, teacher, f"s{seed}", suite, f"n{n_eval}", *overrides])
                if key in results["entries"]:
                    click.echo(f"{key}: already in {out}, skipped")
                    continue
                plan = make_plan(settings, teacher=teacher, suite=suite, n_eval=n_eval,
                                 overrides=Overrides.parse(overrides, bare="teacher"))
                # a teacher's evaluation: what identifies it (schema.identity reads it back), role teacher
                tags = schema.role_tags({schema.TAG_DATASET: dataset, schema.TAG_TEACHER: teacher,
                                         schema.TAG_SEED: str(seed), schema.TAG_SUITE: suite}, schema.ROLE_TEACHER)
                t0 = time.perf_counter()
                handle = obtain_teacher(plan.teacher, plan.splits, settings)
                t1 = time.perf_counter()
                result, analysis = evaluate_model(handle.model, teacher, plan.test(), plan.suite_plan,
                                                  settings, tags)
                t2 = time.perf_counter()
                record = result.to_json()
                results["entries"][key] = {
                    "dataset": dataset, "teacher": teacher, "seed": seed, "suite": suite, "eps": plan.eps,
                    "n": record["n"], "accuracy": record["accuracy"], "per_sample": record["per_sample"],
                    "attacks": record["attacks"], "warnings": record["warnings"],
                    "sanity_checks_passed": all(c["passed"] for c in record["sanity_checks"]),
                    "consistency": analysis.consistency.table(), "teacher_key": handle.key,
                    "teacher_reused": handle.reused, "train_seconds": t1 - t0, "eval_seconds": t2 - t1,
                    "recipe_overrides": list(overrides), "tracking_uri": uri,
                }
                invocation["wall_seconds"] = time.perf_counter() - started
                save_results(out, results)
                acc = record["accuracy"]
                click.echo(f"{key}: " + "  ".join(f"{m} {100 * acc[m]['acc']:.1f}" for m in METRICS if m in acc)
                           + f"  (train {t1 - t0:.0f} s, eval {t2 - t1:.0f} s)")
    invocation["wall_seconds"] = time.perf_counter() - started
    invocation["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    save_results(out, results)


def _cell(values: list[dict]) -> str:
    from robdistill.core.stats import seed_summary

    if len(values) == 1:
        v = values[0]
        return f"{100 * v['acc']:.1f} [{100 * v['ci_low']:.1f}, {100 * v['ci_high']:.1f}]"
    s = seed_summary([v["acc"] for v in values])
    low, high = max(s.low, 0.0), min(s.high, 1.0)  # accuracy lies in [0, 1]
    return f"{100 * s.mean:.1f} ± {100 * s.std:.1f} [{100 * low:.1f}, {100 * high:.1f}]"


def ordering_rows(entries: list[dict], metric: str, primary: str) -> list[str]:
    """For each consecutive pair of ORDERING: the difference in points per seed (the seed is the
    experimental unit: mean with its 95% t-interval) and its reading under the report's rules
    (:func:`robdistill.analysis.verdicts.read_family`): the metric's pairs are one family, Holm-adjusted
    within it, the primary metric's (AutoAttack) is the ordering's claim and the others are secondary;
    "no difference beyond delta" only through the equivalence test at +-``DELTA_ACCURACY``; for an
    inconclusive reading, the seeds it would need. McNemar's exact p per seed is shown too
    (conditional on those trained models: test-image noise only)."""
    from robdistill.analysis.verdicts import DELTA_ACCURACY, fmt_p, read_family
    from robdistill.core.stats import mcnemar_exact, no_spread, seed_summary

    by = {(e["teacher"], e["seed"]): e for e in entries}
    found = []
    for lo, hi in zip(ORDERING, ORDERING[1:]):
        seeds = sorted(s for (t, s) in by if t == lo and (hi, s) in by)
        if not seeds or any(metric not in by[(t, s)]["accuracy"] for t in (lo, hi) for s in seeds):
            continue
        diffs = [by[(hi, s)]["accuracy"][metric]["acc"] - by[(lo, s)]["accuracy"][metric]["acc"] for s in seeds]
        per_seed = [mcnemar_exact(_flags(by[(hi, s)], metric), _flags(by[(lo, s)], metric)) for s in seeds]
        found.append((lo, hi, seeds, seed_summary(diffs), per_seed))
    readings = read_family([f[3] for f in found], DELTA_ACCURACY)
    rows = []
    for (lo, hi, seeds, summary, per_seed), r in zip(found, readings):
        spread = summary.n > 1 and not no_spread(summary)
        interval = f" [{100 * summary.low:+.1f}, {100 * summary.high:+.1f}]" if spread else ""
        family = "primary" if metric == primary else "secondary"
        rows.append(f"| {metric} | {hi} − {lo} | {family} | {100 * summary.mean:+.1f}{interval} | {len(seeds)} | "
                    f"{fmt_p(r.p)} | {fmt_p(r.p_adjusted)} | {fmt_p(r.tost_adjusted)} | "
                    f"{', '.join(f'{p:.2g}' for p in per_seed)} | {r.text} | {r.seeds_text} |")
    return rows


def _flags(entry: dict, metric: str) -> list[int]:
    per = entry["per_sample"]
    if metric == "worst":
        keys = [k for k in per if k != "label"]
        return [int(all(per[k][i] for k in keys)) for i in range(len(per["label"]))]
    return per[metric]


def _dedupe(entries: list[dict]) -> list[dict]:
    """One entry per (dataset, suite, eps, n, teacher, seed): the last one read wins."""
    unique = {}
    for e in entries:
        unique[(e["dataset"], e["suite"], e["eps"], e["n"], e["teacher"], e["seed"])] = e
    return list(unique.values())


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
def report(files) -> None:
    """Markdown tables from results files: one section per (dataset, suite, eps, n)."""
    from robdistill.analysis.verdicts import DELTA_ACCURACY, primary_metric
    from robdistill.core.stats import seed_summary

    entries = _dedupe([e for f in files for e in load_results(f)["entries"].values()])
    groups = dict.fromkeys((e["dataset"], e["suite"], e["eps"], e["n"]) for e in entries)
    for dataset, suite, eps, n in groups:
        rows = [e for e in entries if (e["dataset"], e["suite"], e["eps"], e["n"]) == (dataset, suite, eps, n)]
        teachers = [t for t in ALL_TEACHERS if any(e["teacher"] == t for e in rows)]
        metrics = [m for m in METRICS if any(m in e["accuracy"] for e in rows)]
        seeds = sorted({e["seed"] for e in rows})
        click.echo(f"\n### {dataset} (eps {eps:g}, n = {n} test images, suite `{suite}`, "
                   f"seeds {', '.join(map(str, seeds))})\n")
        click.echo("accuracy %: over several seeds mean ± std [95% t-interval]; for one seed the accuracy "
                   "[95% Wilson interval]\n")
        aa = rows[0]["attacks"].get("autoattack", {})
        if aa:
            click.echo(f"AutoAttack: pyautoattack version `{aa.get('version')}`"
                       + (f" with {', '.join(aa['attacks'])}" if aa.get("attacks") else "") + ".\n")
        click.echo("| teacher | seeds | " + " | ".join(metrics) + " | train s | eval s |")
        click.echo("|---" * (len(metrics) + 4) + "|")
        for teacher in teachers:
            mine = sorted((e for e in rows if e["teacher"] == teacher), key=lambda e: e["seed"])
            cells = [_cell([e["accuracy"][m] for e in mine]) if all(m in e["accuracy"] for e in mine) else "-"
                     for m in metrics]
            trained = [e["train_seconds"] for e in mine if not e["teacher_reused"]]
            train = f"{sum(trained) / len(trained):.0f}" if trained else "cached"
            evaluation = sum(e["eval_seconds"] for e in mine) / len(mine)
            click.echo(f"| {teacher} | {','.join(str(e['seed']) for e in mine)} | " + " | ".join(cells)
                       + f" | {train} | {evaluation:.0f} |")
        primary = primary_metric([m for m in metrics if m != "clean"])
        click.echo("\nAALP Table 2 ordering (AT < ALP < AALP): the higher minus the lower teacher of each pair, in "
                   f"accuracy points, mean over seeds [95% t-interval]. Each attack's two pairs are one family "
                   f"(Holm within it); {primary} is the primary metric, the others secondary. TOST: two one-sided "
                   f"tests against ±{100 * DELTA_ACCURACY:g} points (Holm); McNemar exact p per seed\n")
        click.echo("| attack | difference | family | points | seeds | p | Holm p | TOST p (Holm) | McNemar p per seed "
                   "| reading | seeds needed |")
        click.echo("|---" * 11 + "|")
        for metric in metrics:
            for line in ordering_rows(rows, metric, primary):
                click.echo(line)
        if {"pgd", "autoattack"} <= set(metrics):
            click.echo("\nPGD-20 versus AutoAttack (Engstrom et al. 2018: a defence that only looks robust to "
                       "short PGD shows a large drop); points, mean over seeds [95% t-interval]\n")
            click.echo("| teacher | PGD-20 − AutoAttack | FGSM − AutoAttack |")
            click.echo("|---|---|---|")
            for teacher in teachers:
                mine = [e for e in rows if e["teacher"] == teacher]
                cells = []
                for weak in ("pgd", "fgsm"):
                    s = seed_summary([e["accuracy"][weak]["acc"] - e["accuracy"]["autoattack"]["acc"] for e in mine])
                    cells.append(f"{100 * s.mean:+.1f}" + (f" [{100 * s.low:+.1f}, {100 * s.high:+.1f}]" if s.n > 1 else ""))
                click.echo(f"| {teacher} | {cells[0]} | {cells[1]} |")
        consistency_rows(rows, teachers, seeds)
        failed = [f"{e['teacher']}/s{e['seed']}" for e in rows if not e["sanity_checks_passed"]]
        warned = [f"{e['teacher']}/s{e['seed']}: {w}" for e in rows for ws in e["warnings"].values() for w in ws]
        click.echo(f"\nsanity checks: {'all passed' if not failed else 'FAILED for ' + ', '.join(failed)}")
        for line in warned:
            click.echo(f"- warning {line}")


CONSISTENCY_COLUMNS = (("share", "share %", 100.0, ".1f"), ("clean_prob", "clean p(y)", 1.0, ".3f"),
                       ("adv_prob", "adv p(y)", 1.0, ".3f"), ("clean_ce", "clean CE", 1.0, ".3f"),
                       ("adv_ce", "adv CE", 1.0, ".3f"), ("pairing_loss", "pairing ‖f(x)−f(x̃)‖²", 1.0, ".3f"))


def consistency_rows(rows: list[dict], teachers: list[str], seeds: list[int]) -> None:
    """AALP Tables 1 and 4: each teacher's consistent (clean and PGD-20 right) and inconsistent
    (clean right, PGD-20 wrong) sets, every statistic the mean over seeds of the per-seed values."""
    if not all(e.get("consistency") for e in rows):
        return
    click.echo(f"\nAALP's consistent / inconsistent sets (AALP Tables 1 and 4), PGD-20, mean over "
               f"{len(seeds)} seed(s)\n")
    click.echo("| teacher | set | " + " | ".join(title for _, title, _, _ in CONSISTENCY_COLUMNS) + " |")
    click.echo("|---" * (len(CONSISTENCY_COLUMNS) + 2) + "|")
    for teacher in teachers:
        mine = [e["consistency"] for e in rows if e["teacher"] == teacher]
        for part in ("consistent", "inconsistent"):
            cells = [format(scale * sum(c[part][key] for c in mine) / len(mine), fmt)
                     for key, _, scale, fmt in CONSISTENCY_COLUMNS]
            click.echo(f"| {teacher} | {part} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
