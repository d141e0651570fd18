"""Reading runs back: find them in a tracking store by stage and tags (:func:`find_runs`), say which
model each is about from its tags (:func:`run_identity`), show them as one table (`robdistill
compare`), and open MLflow's UI on the store in use (`robdistill ui`)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from robdistill.core import metrics as _metrics
from robdistill.tracking import schema
from robdistill.tracking import store as tracking
from robdistill.core.errors import UserError


def filter_string(stage: str | None, sweep: str | None, tags: Sequence[str] | Mapping[str, str]) -> str:
    """MLflow search filter from ``--stage``, ``--sweep`` and ``--tag key=value`` options (or a
    mapping of tag keys to values)."""
    pairs = []
    if stage:
        pairs.append((schema.TAG_STAGE, stage))
    if sweep:
        pairs.append((schema.TAG_SWEEP_ID, sweep))
    if isinstance(tags, Mapping):
        pairs += list(tags.items())
    else:
        for text in tags:
            key, sep, value = text.partition("=")
            if not sep or not key.strip():
                raise UserError(f"--tag '{text}': write it as key=value (e.g. --tag teacher=alp)")
            pairs.append((key.strip(), value.strip()))
    return " and ".join(schema.tag_filter(key, value) for key, value in pairs)


def find_runs(tracking_uri: str | None, experiment: str, stage: str | None = schema.STAGE_RUN,
              sweep: str | None = None, tags: Sequence[str] | Mapping[str, str] = (), limit: int = 1000) -> list:
    """Runs of ``experiment`` matching the filters (``stage``: a :data:`schema.STAGES` name or None
    for any; ``sweep``: a sweep's parent run id; ``tags``: ``key=value`` texts or a mapping), newest
    first; a missing experiment is an error. Which model each is about: :func:`run_identity`; an
    evaluation's results: :func:`robdistill.tracking.results.load_results`."""
    query = filter_string(stage, sweep, tags)  # bad filters fail before the store is touched
    found = find_experiment(tracking_uri, experiment)
    import mlflow

    return mlflow.search_runs(experiment_ids=[found.experiment_id], filter_string=query,
                              max_results=limit, order_by=["attributes.start_time DESC"], output_format="list")


def find_experiment(tracking_uri: str | None, experiment: str):
    """The ``mlflow.entities.Experiment`` named ``experiment`` in the store; a missing store (never
    created by reading it) or experiment is a one-line error."""
    uri = tracking.resolve_tracking_uri(tracking_uri)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        raise UserError(f"no tracking store at {uri} (nothing has run here yet); pass --tracking-uri")
    tracking.quiet_mlflow_logging()
    import mlflow

    mlflow.set_tracking_uri(uri)
    try:
        found = mlflow.get_experiment_by_name(experiment)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(f"cannot read tracking store {uri} ({first}); check --tracking-uri") from None
    if found is None:
        raise UserError(f"no experiment '{experiment}' in {uri}; pass --experiment (runs go to 'robdistill' "
                        f"by default)")
    return found


def run_identity(run, perturbations: Iterable[str] = ()) -> schema.RunIdentity:
    """Which model a run found by :func:`find_runs` is about (dataset, teacher, perturb, student,
    seed, role, suite), from its tags (:func:`robdistill.tracking.schema.identity`); for an
    evaluation of `robdistill evaluate` from its checkpoint's name, a student's teacher and
    perturbation only given the registered ``perturbations``."""
    return schema.identity(run.data.tags, perturbations)


def accuracy_columns(runs: Sequence) -> list[str]:
    """Every accuracy metric present (``[teacher/|student/]acc/<key>``, intervals aside), in a reader's
    order: teacher then student; clean first, the attacks in the bundled suites' order (FGSM, PGD, CW,
    AutoAttack, transfer; others after them by name), worst last."""
    present = {key for run in runs for key in run.data.metrics if not schema.is_interval_metric(key)}
    columns = []
    for prefix in [schema.accuracy_prefix(role) for role in schema.ROLES] + [schema.accuracy_prefix()]:
        keys = sorted(k[len(prefix):] for k in present if k.startswith(prefix) and "/" not in k[len(prefix):])
        order = {k: i for i, k in enumerate(_metrics.ATTACK_ORDER)}
        keys.sort(key=lambda k: (k == "worst", k != "clean", order.get(k, len(order)), k))
        columns += [prefix + k for k in keys]
    return columns


def runs_table(runs: Sequence) -> tuple[list[str], list[list[str]]]:
    """One row per run: id, name, status, the identifying tags, and accuracy % with the 95% interval."""
    metrics = accuracy_columns(runs)
    header = ["run", "name", "status", *schema.IDENTITY_TAGS, *metrics]
    rows = []
    for run in runs:
        m = run.data.metrics
        cells = []
        for key in metrics:
            if key not in m:
                cells.append("-")
                continue
            low, high = (m.get(name) for name in schema.interval_metric_names(key))
            interval = f" [{100 * low:.1f}, {100 * high:.1f}]" if low is not None and high is not None else ""
            cells.append(f"{100 * m[key]:.1f}{interval}")
        rows.append([run.info.run_id[:8], run.info.run_name or "", run.info.status,
                     *[run.data.tags.get(t, "") for t in schema.IDENTITY_TAGS], *cells])
    return header, rows


#: what a local MLflow server for one user runs without: MLflow 3's job runners (huey consumers for
#: GenAI features such as trace roll-ups, which robdistill does not use). With them and MLflow's
#: default workers, `mlflow ui` took 15.3 s to answer and ran 15 processes at load 5 on the 2-core
#: machine; with one worker and none of them, 4.7 s and 2 processes.
LEAN_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def lean_server_env() -> dict[str, str]:
    """The environment of an MLflow server robdistill starts for one user (``ui``, a local pool)."""
    return {**os.environ, **LEAN_SERVER_ENV}


def ui_command(tracking_uri: str | None, port: int) -> list[str] | None:
    """The `mlflow ui` command for a local store (one worker: one user); None for a tracking server
    (it is its own UI)."""
    uri = tracking.resolve_tracking_uri(tracking_uri)
    if uri.startswith(("http://", "https://")):
        return None
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
            "--port", str(port), "--workers", "1"]


FORWARDED_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP")


def open_ui(tracking_uri: str | None, port: int) -> int:
    """Run `mlflow ui` in its own process group until it ends; SIGTERM, SIGINT (Ctrl-C) and SIGHUP go
    to the whole group (the server and its workers), which is waited for, so the port is free when
    this returns. The exit status: the server's, or 128 + the signal that stopped it."""
    command = ui_command(tracking_uri, port)
    if command is None:
        return 0
    if not hasattr(os, "killpg"):  # no process groups (Windows): the console signals the child itself
        return subprocess.call(command, env=lean_server_env())
    received: list[int] = []
    child: subprocess.Popen | None = None

    def forward(signum: int, frame: object) -> None:
        received.append(signum)
        if child is not None:
            _signal_group(child.pid, signum)

    signums = [getattr(signal, name) for name in FORWARDED_SIGNALS if hasattr(signal, name)]
    previous = {signum: signal.signal(signum, forward) for signum in signums}
    try:
        child = subprocess.Popen(command, start_new_session=True, env=lean_server_env())
        if received:  # a signal before the child existed
            _signal_group(child.pid, received[0])
        status = child.wait()
    finally:
        if child is not None:
            stop_group(child)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 128 + int(received[0]) if received else status


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` is still running (zombies, which hold no port, aside)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def stop_group(child: subprocess.Popen, grace: float = 10.0) -> None:
    """End what is left of ``child``'s process group (workers that outlive the server): SIGTERM,
    then SIGKILL after ``grace`` seconds; returns once none is left."""
    if child.poll() is None or group_alive(child.pid):
        _signal_group(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while group_alive(child.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if group_alive(child.pid):
        _signal_group(child.pid, signal.SIGKILL)
        while group_alive(child.pid) and time.monotonic() < deadline + 5:
            time.sleep(0.1)
    try:
        child.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
