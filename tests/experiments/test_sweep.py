"""`robdistill sweep`: the grid, its MLflow layout, teacher reuse, and the summary statistics."""
from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
import torch
from click.testing import CliRunner

from robdistill.cli.main import main
from robdistill.eval.results import EvaluationResult
from robdistill.analysis.study import TEACHER_ROW, Cell, paired_rows, summary_rows


def result(clean: list[int], pgd: list[int]) -> EvaluationResult:
    n = len(clean)
    return EvaluationResult("m", 0.1, torch.zeros(n, dtype=torch.long), torch.tensor(clean, dtype=torch.bool),
                            {"pgd": torch.tensor(pgd, dtype=torch.bool)}, {}, {})


def test_summary_and_paired_rows_by_hand() -> None:
    # 4 test images; keep: pgd 1/4 then 2/4; shuffle: pgd 3/4 then 3/4 (same teacher, seeds 0 and 1)
    cells = [
        Cell("at", "keep", 0, result([1, 1, 1, 1], [1, 0, 0, 0]), "r0"),
        Cell("at", "keep", 1, result([1, 1, 1, 0], [1, 1, 0, 0]), "r1"),
        Cell("at", "nonmax-shuffle", 0, result([1, 1, 1, 1], [1, 1, 1, 0]), "r2"),
        Cell("at", "nonmax-shuffle", 1, result([1, 1, 1, 1], [1, 1, 1, 0]), "r3"),
        Cell("at", TEACHER_ROW, 0, result([1, 1, 1, 1], [1, 1, 1, 1]), "r0"),
    ]
    header, rows = summary_rows(cells)
    assert header == ["teacher", "perturb", "seeds", "n", "clean", "pgd", "worst"]
    by = {r[1]: r for r in rows}
    assert [r[1] for r in rows] == [TEACHER_ROW, "keep", "nonmax-shuffle"]
    assert by[TEACHER_ROW][2:5] == ["0", "4", "100.0 [51.0, 100.0]"]     # one seed: Wilson(4, 4)
    # pgd over seeds: 25% and 50% -> mean 37.5, std 17.7, t_{.975,1} = 12.706 -> clipped to [0, 100]
    assert by["keep"][5] == "37.5 ± 17.7 [0.0, 100.0]"
    assert by["nonmax-shuffle"][5] == "75.0 ± 0.0 [75.0, 75.0]"
    header, rows = paired_rows(cells)
    assert header[:6] == ["teacher", "comparison", "metric", "family", "seeds", "difference (points)"]
    pgd = next(r for r in rows if r[2] == "pgd")
    assert pgd[:5] == ["at", "nonmax-shuffle - keep", "pgd", "secondary", "2"]  # no autoattack: worst is primary
    # differences +50 and +25 points: mean +37.5, half-width 12.706 * 17.68 / sqrt(2) = 158.8
    assert pgd[5] == "+37.5 [-121.3, +196.3]"
    assert float(pgd[6]) == pytest.approx(0.2048, abs=1e-3)  # paired t: t = 3, df = 1
    assert pgd[7] == pgd[6] and pgd[8] == pgd[6]             # a family of one per metric: Holm changes nothing
    # McNemar per seed: seed 0 has 2 discordant pairs, both for shuffle (p = 2 / 4); seed 1 has 1 (p = 1)
    assert pgd[10] == "0.5, 1"
    assert pgd[11] == "inconclusive"  # the t-interval over seeds contains 0
    assert next(r for r in rows if r[2] == "worst")[3] == "primary"


def counted(n: int, k: int) -> EvaluationResult:
    """n test images, all clean-correct, k of them pgd-robust."""
    return result([1] * n, [1] * k + [0] * (n - k))


def paired_pgd_row(n: int, keep: list[int], other: list[int]) -> list[str]:
    """The pgd row of paired_rows for per-seed robust counts (out of n) of keep and of a perturbation."""
    cells = ([Cell("at", "keep", s, counted(n, k), f"k{s}") for s, k in enumerate(keep)]
             + [Cell("at", "nonmax-shuffle", s, counted(n, k), f"s{s}") for s, k in enumerate(other)])
    _, rows = paired_rows(cells)
    return next(r for r in rows if r[2] == "pgd")


@pytest.mark.parametrize("n, keep, other, p, reading", [
    # two seeds, each exactly +1 image of 4 (25 points, beyond delta): zero spread; a sign test over
    # 2 seeds gives p = 0.5
    (4, [1, 2], [2, 3], "0.5", "inconclusive (no spread, sign test)"),
    # +1 image of 1000 (0.1 point), but 9/1000 - 8/1000 != 1/1000 - 0/1000 in float: the spread is
    # rounding noise (std ~ 6e-19), on which a t-test would read p ~ 3e-16; the difference is exactly
    # known and inside +-3 points
    (1000, [8, 0], [9, 1], "0.5", "no difference beyond delta (no spread)"),
    # five seeds: p = 2 / 2^5 = 0.0625, still no direction; six: p = 0.03125 < 0.05
    (4, [1] * 5, [2] * 5, "0.0625", "inconclusive (no spread, sign test)"),
    (4, [1] * 6, [2] * 6, "0.0312", "higher (no spread, sign test)"),
    (4, [3] * 6, [2] * 6, "0.0312", "lower (no spread, sign test)"),
    (4, [1, 2, 3], [1, 2, 3], "1", "no difference beyond delta (no spread)"),
])
def test_paired_reading_without_spread_comes_from_a_sign_test(n: int, keep: list[int], other: list[int],
                                                              p: str, reading: str) -> None:
    """A direction comes from a test, never from zero variance: with no spread over seeds the paired
    t-test is undefined ("-") and an exact two-sided sign test over seeds decides (>= 6 seeds)."""
    row = paired_pgd_row(n, keep, other)
    assert row[6] == "-" and row[7] == p
    assert row[11] == reading


def test_paired_reading_with_spread_is_the_t_test() -> None:
    row = paired_pgd_row(4, [0, 0, 0], [2, 3, 2])   # +50, +75, +50 points: t = 13, df = 2
    assert float(row[6]) < 0.05 and row[11] == "higher" and row[12] == "-"
    row = paired_pgd_row(4, [0, 0], [1, 3])          # +25, +75: the t-interval contains 0
    assert float(row[6]) > 0.05 and row[11] == "inconclusive"
    assert row[12].startswith("higher: ")              # the seeds that would resolve it
    assert paired_pgd_row(4, [2], [3])[11] == "inconclusive (1 seed)"


TINY = ["--set", "teacher.epochs=1", "--set", "student.epochs=1", "--suite", "smoke", "--n-eval", "24", "--quiet"]


@pytest.mark.slow
def test_sweep_grid_layout_and_teacher_reuse(workdir: Path) -> None:
    out = CliRunner().invoke(main, ["sweep", "--teachers", "standard,at", "--perturbs", "keep,nonmax-flatten",
                                    "--seeds", "0,1", "--out", "grid.md", "--out", "grid.csv", *TINY])
    assert out.exit_code == 0, (out.output, out.exception)
    assert "sweep summary" in out.stdout and "nonmax-flatten - keep" in out.stdout
    for name in ("grid.md", "grid-paired.md", "grid.csv", "grid-paired.csv"):
        assert (workdir / name).is_file(), name
    assert (workdir / "grid.csv").read_text().splitlines()[0].startswith("teacher,perturb,seeds,n,clean")
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["robdistill"], output_format="list")
    assert all(r.info.status == "FINISHED" for r in runs)
    sweep = [r for r in runs if r.data.tags.get("stage") == "sweep"]
    assert len(sweep) == 1 and sweep[0].info.run_id in out.stdout
    cells = [r for r in runs if r.data.tags.get("stage") == "run"]
    assert len(cells) == 8
    assert all(r.data.tags["mlflow.parentRunId"] == sweep[0].info.run_id for r in cells)
    assert all(r.data.tags["sweep_id"] == sweep[0].info.run_id for r in cells)
    trained = [r for r in runs if r.data.tags.get("stage") == "teacher" and r.data.tags["reused"] == "false"]
    assert sorted((r.data.tags["teacher"], r.data.tags["seed"]) for r in trained) == [
        ("at", "0"), ("at", "1"), ("standard", "0"), ("standard", "1")]
    # the teacher is attacked once per (teacher, seed): 4 teacher evaluations, 8 student ones
    evaluations = [r for r in runs if r.data.tags.get("stage") == "evaluation"]
    assert len(evaluations) == 12
    assert "at/nonmax-flatten/acc/pgd" in sweep[0].data.metrics
    # Seguin et al. claims (1) and (2), printed and logged with the grid of images
    assert "claim 1" in out.stdout and "at vs standard (same seed)" in out.stdout
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(sweep[0].info.run_id, "seguin")}
    assert artifacts == {"seguin/confidence_difference_at_vs_standard.png"}
    logged = {a.path for a in mlflow.MlflowClient().list_artifacts(sweep[0].info.run_id, "teacher_logits")}
    assert logged == {f"teacher_logits/{t}-s{s}.json" for t in ("standard", "at") for s in (0, 1)}


@pytest.mark.parametrize("args, message", [
    (["--seeds", "0,x"], "--seeds must be comma-separated integers"),
    (["--seeds", "0,0"], "--seeds names an entry twice"),
    (["--perturbs", "keep,nope"], "unknown perturbation 'nope'"),
    (["--teachers", "at,nope"], "unknown teacher 'nope'"),
    (["--out", "table.txt"], "use a .csv or .md file name"),
    (["--eps", "2"], r"--eps must lie in \[0, 1\]"),
    (["--set", "epochs=2"], "prefix the field"),
])
def test_sweep_bad_input_is_one_line_and_starts_nothing(workdir: Path, args: list[str], message: str) -> None:
    import re

    out = CliRunner().invoke(main, ["sweep", *args, "--quiet"])
    assert out.exit_code == 2
    assert re.search(message, out.stderr) and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not (workdir / "mlflow.db").exists() or not mlflow.search_runs(experiment_names=["robdistill"])


def test_shards_partition_the_teacher_groups() -> None:
    from robdistill.experiments.sweep import parse_shard, shard_groups

    groups = [shard_groups([0, 1], ["standard", "at", "alp"], (i, 4)) for i in range(1, 5)]
    flat = [g for part in groups for g in part]
    assert sorted(flat) == sorted((s, t) for s in (0, 1) for t in ("standard", "at", "alp"))  # each once
    assert [len(part) for part in groups] == [2, 2, 1, 1]
    assert parse_shard("2/3") == (2, 3) and parse_shard(None) is None
    for bad in ("0/3", "4/3", "x/3", "3", "1/0"):
        with pytest.raises(Exception, match="--shard must be i/n"):
            parse_shard(bad)


def test_results_round_trip_through_json() -> None:
    from robdistill.eval.results import result_from_json

    r = result([1, 1, 0, 1], [1, 0, 0, 1])
    back = result_from_json(r.to_json())
    assert torch.equal(back.clean, r.clean) and torch.equal(back.robust["pgd"], r.robust["pgd"])
    assert {k: (p.k, p.n) for k, p in back.accuracies().items()} == {k: (p.k, p.n) for k, p in r.accuracies().items()}


@pytest.mark.slow
def test_shards_on_one_store_merge_into_the_full_grid(workdir: Path) -> None:
    grid = ["sweep", "--teachers", "standard,at", "--perturbs", "keep,nonmax-shuffle", "--seeds", "0", *TINY]
    outs = [CliRunner().invoke(main, [*grid, "--shard", f"{i}/2"]) for i in (1, 2)]
    assert [o.exit_code for o in outs] == [0, 0], [o.output for o in outs]
    name = outs[0].stdout.split("robdistill sweep-report ")[1].split()[0]
    assert f"robdistill sweep-report {name}" in outs[1].stdout  # every shard computes the same name
    merged = CliRunner().invoke(main, ["sweep-report", name, "--out", "merged.csv"])
    assert merged.exit_code == 0, (merged.output, merged.exception)
    rows = (workdir / "merged.csv").read_text().splitlines()[1:]
    assert sorted(r.split(",")[:2] for r in rows) == [["at", "(teacher)"], ["at", "keep"], ["at", "nonmax-shuffle"],
                                                      ["standard", "(teacher)"], ["standard", "keep"],
                                                      ["standard", "nonmax-shuffle"]]
    # the merged numbers are the shards' own
    for out in outs:
        for line in out.stdout.splitlines():
            if line.startswith(("at ", "standard ")) and " 0 " in line and "[" in line:
                teacher, perturb = line.split()[:2]
                merged_line = next(m for m in merged.stdout.splitlines() if m.split()[:2] == [teacher, perturb])
                assert merged_line.split() == line.split()
    # neither shard holds both teachers, so only the merge can state claims 1 and 2: from the logged logits
    assert all("at vs standard (same seed)" not in out.stdout for out in outs)
    assert "claim 1" in merged.stdout and "at vs standard (same seed)" in merged.stdout
    bad = CliRunner().invoke(main, ["sweep-report", "sweep-nope"])
    assert bad.exit_code == 2 and "no finished evaluations" in bad.stderr

    # the grid extended with seed 1 later: a second sweep, merged with the first by naming both
    more = CliRunner().invoke(main, ["sweep", "--teachers", "standard,at", "--perturbs", "keep,nonmax-shuffle",
                                     "--seeds", "1", *TINY, "--shard", "1/1"])
    assert more.exit_code == 0, (more.output, more.exception)
    second = more.stdout.split("robdistill sweep-report ")[1].split()[0]
    both = CliRunner().invoke(main, ["sweep-report", name, second])
    assert both.exit_code == 0, (both.output, both.exception)
    summary = [line.split() for line in both.stdout.splitlines() if line.startswith(("at ", "standard "))]
    assert {row[2] for row in summary if row[1] in ("keep", "nonmax-shuffle") and row[2] != "-"} == {"0,1"}
    assert any(row[:4] == ["at", "nonmax-shuffle", "-", "keep"] and row[6] == "2" for row in summary)
    assert "at vs at (different seeds)" in both.stdout  # claim 2 over both sweeps' teachers
    # a cell in two sweeps is refused, naming both
    overlap = CliRunner().invoke(main, ["sweep", "--teachers", "standard", "--perturbs", "keep", "--seeds", "1",
                                        *TINY, "--shard", "1/1"])
    third = overlap.stdout.split("robdistill sweep-report ")[1].split()[0]
    clash = CliRunner().invoke(main, ["sweep-report", second, third])
    assert clash.exit_code == 2 and f"in both sweeps {second} and {third}" in clash.stderr, clash.output
    # a sweep over other perturbations attacks the same cached teacher again: its row counts once
    other = CliRunner().invoke(main, ["sweep", "--teachers", "standard", "--perturbs", "nonmax-flatten",
                                      "--seeds", "1", *TINY, "--shard", "1/1"])
    fourth = other.stdout.split("robdistill sweep-report ")[1].split()[0]
    merged = CliRunner().invoke(main, ["sweep-report", second, fourth])
    assert merged.exit_code == 0, (merged.output, merged.exception)
    summary_table = merged.stdout.split("each perturbation against keep")[0]
    teacher_rows = [line.split() for line in summary_table.splitlines() if line.startswith("standard  (teacher)")]
    assert len(teacher_rows) == 1 and teacher_rows[0][2] == "1", merged.stdout


def test_claims_of_stored_sweeps_name_teachers_without_logits() -> None:
    from robdistill.tracking.sweeps import StoredSweeps

    z = torch.tensor([[3.0, 0.0], [0.0, 1.0], [2.0, 1.0]])
    cells = [Cell(t, "keep", s, result([1, 1, 1], [1, 0, 0]), "r") for t in ("at", "standard") for s in (0, 1)]
    stored = StoredSweeps(cells, {("at", 0): z, ("standard", 0): z * 2, ("at", 1): z})
    assert stored.missing_logits() == [("standard", 1)]
    claims = stored.claims()
    assert [row[0] for row in claims.logits_rows] == ["standard", "at"]  # the reference first, as `sweep` prints
    assert StoredSweeps(cells, {("at", 0): z}).claims() is None  # no reference teacher: no claims


def test_sweeps_measured_differently_do_not_merge() -> None:
    from types import SimpleNamespace

    from robdistill.core.errors import UserError
    from robdistill.tracking.sweeps import check_mergeable

    def parent(**params: str):
        base = {"dataset": "digits", "student": "default", "suite": "fast", "eps": "null", "n_eval": "null",
                "overrides": "[]", "seeds": "0"}
        return SimpleNamespace(data=SimpleNamespace(params={**base, **params}))

    check_mergeable({"a": [parent()], "b": [parent(seeds="1,2", teachers="at")]})  # seeds differ: fine
    for field, value in (("dataset", "fashion-mnist"), ("n_eval", "100"), ("overrides", '["student.epochs=3"]'),
                         ("suite", "full"), ("eps", "0.2"), ("student", "ard")):
        with pytest.raises(UserError, match=f"sweeps a and b differ in {field}"):
            check_mergeable({"a": [parent()], "b": [parent(**{field: value})]})


@pytest.mark.slow
def test_a_sweep_run_again_skips_its_finished_cells_and_reruns_the_others(workdir: Path) -> None:
    grid = ["sweep", "--teachers", "standard", "--perturbs", "keep,nonmax-shuffle", "--seeds", "0", *TINY]
    first = CliRunner().invoke(main, grid)
    assert first.exit_code == 0, (first.output, first.exception)
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")

    def cell_runs() -> list:
        runs = mlflow.search_runs(experiment_names=["robdistill"], output_format="list")
        return [r for r in runs if r.data.tags.get("stage") == "run"]

    assert len(cell_runs()) == 2
    summary = [line for line in first.stdout.splitlines() if line.startswith("standard ")]
    again = CliRunner().invoke(main, grid)
    assert again.exit_code == 0, (again.output, again.exception)
    assert len(cell_runs()) == 2  # nothing ran again
    assert [line for line in again.stdout.splitlines() if line.startswith("standard ")] == summary
    # a cell whose run was killed runs again; the finished one does not
    shuffle = next(r for r in cell_runs() if r.data.tags["perturb"] == "nonmax-shuffle")
    mlflow.MlflowClient().set_terminated(shuffle.info.run_id, "KILLED")
    third = CliRunner().invoke(main, grid)
    assert third.exit_code == 0, (third.output, third.exception)
    runs = cell_runs()
    assert sorted((r.data.tags["perturb"], r.info.status) for r in runs) == [
        ("keep", "FINISHED"), ("nonmax-shuffle", "FINISHED"), ("nonmax-shuffle", "KILLED")]
    assert [line for line in third.stdout.splitlines() if line.startswith("standard ")] == summary


@pytest.mark.slow
def test_sweep_status_lists_every_cell_of_the_grid(workdir: Path) -> None:
    grid = ["sweep", "--teachers", "standard", "--perturbs", "keep,nonmax-shuffle", "--seeds", "0,1", *TINY]
    shard = CliRunner().invoke(main, [*grid, "--shard", "1/2"])  # seed 0 only
    assert shard.exit_code == 0, (shard.output, shard.exception)
    name = shard.stdout.split("robdistill sweep-report ")[1].split()[0]
    out = CliRunner().invoke(main, ["sweep-status", name])
    assert out.exit_code == 0, (out.output, out.exception)
    assert f"{name}: 4 cells: 2 finished, 0 running, 0 failed, 0 killed, 2 missing" in out.stdout
    rows = [line.split() for line in out.stdout.splitlines() if line.startswith("standard")]
    assert rows == [["standard", "0", "finished", "finished"], ["standard", "1", "missing", "missing"]]
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["robdistill"], output_format="list")
    run_id = next(r.info.run_id for r in runs if r.data.tags.get("stage") == "run")
    for command in ("sweep-status", "sweep-report"):
        bad = CliRunner().invoke(main, [command, run_id])
        assert bad.exit_code == 2 and "looks like a run id" in bad.stderr, bad.output
        assert len(bad.stderr.strip().splitlines()) == 1
