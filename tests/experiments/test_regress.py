"""The CI regression gate: tolerance from the seed spread and the Wilson interval, baseline file
errors, and end to end: a baseline measured, the gate passing on the same code and failing when an
objective is deliberately broken."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch.nn.functional as F
from click.testing import CliRunner

from robdistill.cli.main import main
from robdistill.core.errors import UserError
from robdistill.train.objectives import OBJECTIVES, LossOutput
from robdistill.experiments.regress import FORMAT, GateRow, load_baseline, prediction_tolerance
from robdistill.core.stats import wilson


def test_prediction_tolerance_by_hand() -> None:
    # s = 0.02 over k = 3 seeds, one check: t_{0.95, 2} = 2.919986 -> 2.919986 * 0.02 * sqrt(4/3)
    assert prediction_tolerance([0.80, 0.82, 0.84], 359) == pytest.approx(2.919986 * 0.02 * math.sqrt(4 / 3), rel=1e-5)
    # 20 checks, Bonferroni: t_{1 - 0.05/20, 2} = t_{0.9975, 2} = 14.08905
    assert prediction_tolerance([0.80, 0.82, 0.84], 359, checks=20) == pytest.approx(
        14.08905 * 0.02 * math.sqrt(4 / 3), rel=1e-4)
    # identical seeds: the Wilson half-width at the mean is the floor
    p = wilson(round(0.5 * 100), 100)
    assert prediction_tolerance([0.5, 0.5, 0.5], 100) == pytest.approx((p.high - p.low) / 2)


def test_gate_row_verdicts() -> None:
    assert GateRow("a|b|student|fgsm", float("nan"), float("nan"), 0.5, unexpected=True).failed
    assert GateRow("a|b|student|pgd", 0.70, 0.05, 0.66).verdict == "pass"
    assert GateRow("a|b|student|pgd", 0.70, 0.05, 0.64).failed
    assert GateRow("a|b|student|pgd", 0.70, 0.05, 0.80).verdict.startswith("pass (improved")
    assert GateRow("a|b|student|pgd", 0.70, 0.05, None).failed


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    ("{not json", "not readable JSON"),
    ('{"format": "other"}', "not a robdistill baseline"),
    (json.dumps({"format": FORMAT, "cases": [["at", "keep"]], "colour": 1}), "unknown field 'colour'"),
    (json.dumps({"format": FORMAT, "cases": []}), "non-empty list"),
    (json.dumps({"format": FORMAT, "cases": [["at", "keep"]], "update_seeds": [1]}), "at least 2 seeds"),
    (json.dumps({"format": FORMAT, "cases": [["at", "keep"]], "metrics": ["fgsm"]}), "'metrics' must be"),
    (json.dumps({"format": FORMAT, "cases": [["at", "keep"]], "update_seeds": [0, 1]}), "gate_seed 0 is one of"),
])
def test_bad_baselines(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "baseline.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UserError, match=message):
        load_baseline(path)


def test_gate_without_expectations_is_an_error(workdir: Path) -> None:
    path = workdir / "b.json"
    path.write_text(json.dumps({"format": FORMAT, "cases": [["at", "keep"]]}))
    out = CliRunner().invoke(main, ["regress", "--baseline", str(path), "--quiet"])
    assert out.exit_code == 2 and "run with --update first" in out.stderr


def scrambled_labels(model, x, y, ctx) -> LossOutput:
    """A deliberately broken objective: CE against shifted labels (a data-pipeline bug)."""
    logits = model(x)
    loss = F.cross_entropy(logits, (y + 1) % logits.shape[1])
    return LossOutput(loss, logits.detach(), {})


@pytest.mark.slow
def test_gate_passes_on_the_baseline_code_and_fails_on_a_broken_objective(workdir: Path) -> None:
    path = workdir / "tiny.json"
    path.write_text(json.dumps({
        "format": FORMAT, "dataset": "digits", "suite": "smoke", "n_eval": 100,
        "overrides": ["teacher.epochs=3", "student.epochs=2"], "cases": [["at", "keep"]],
        "gate_seed": 0, "update_seeds": [1, 2, 3]}))
    runner = CliRunner()
    out = runner.invoke(main, ["regress", "--baseline", str(path), "--update", "--quiet"])
    assert out.exit_code == 0, (out.output, out.exception)
    expected = json.loads(path.read_text())["expected"]
    assert set(expected) == {f"at|-|teacher|{m}" for m in ("clean", "pgd", "cw", "worst")} | {
        f"at|keep|student|{m}" for m in ("clean", "pgd", "cw", "worst")}
    assert all(len(e["values"]) == 3 and e["tolerance"] > 0 for e in expected.values())

    out = runner.invoke(main, ["regress", "--baseline", str(path), "--quiet"])
    assert out.exit_code == 0, out.output
    assert "regression gate: passed (8/8 within tolerance)" in out.stdout

    # an edited configuration is refused until it is re-measured
    edited = json.loads(path.read_text())
    edited["n_eval"] = 90
    (workdir / "edited.json").write_text(json.dumps(edited))
    out = runner.invoke(main, ["regress", "--baseline", str(workdir / "edited.json"), "--quiet"])
    assert out.exit_code == 2 and "configuration changed" in out.stderr

    with OBJECTIVES.override("at", scrambled_labels):
        out = runner.invoke(main, ["regress", "--baseline", str(path), "--quiet"])
    assert out.exit_code == 1, out.output
    assert "FAIL (regression)" in out.stdout and "regression gate: FAILED" in out.stdout


def test_add_seeds_measures_only_the_new_seeds_and_refits(monkeypatch, tmp_path: Path) -> None:
    """--add-seeds: the stored values stay, the new seeds' values are appended, the tolerances
    are refitted over all seeds, and the fingerprint covers the new seed list."""
    from robdistill.experiments import regress
    from robdistill.config.settings import Settings

    fake = {1: 0.80, 2: 0.84, 3: 0.82, 4: 0.78}
    measured: list[int] = []

    def measure(baseline, settings, seed, on_case=None):
        measured.append(seed)
        return {"at|keep|student|pgd": (fake[seed], 359)}

    monkeypatch.setattr(regress, "measure", measure)
    spec = regress.Baseline(cases=[["at", "keep"]], metrics=["pgd"], update_seeds=[1, 2])
    spec = regress.update(spec, Settings())
    assert measured == [1, 2]
    grown = regress.extend(spec, Settings(), [3, 4])
    assert measured == [1, 2, 3, 4]  # 1 and 2 were not measured again
    entry = grown.expected["at|keep|student|pgd"]
    assert grown.update_seeds == [1, 2, 3, 4] and entry["values"] == [0.80, 0.84, 0.82, 0.78]
    assert entry["tolerance"] == pytest.approx(prediction_tolerance([0.80, 0.84, 0.82, 0.78], 359))
    regress.check_expectations(grown)  # measured under its own (new) configuration
    with pytest.raises(UserError, match="gate seed"):
        regress.extend(grown, Settings(), [0])
    with pytest.raises(UserError, match="not already in"):
        regress.extend(grown, Settings(), [4, 5])
