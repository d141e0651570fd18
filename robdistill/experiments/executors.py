"""Where a sweep's cells run. ``serial`` (the default): one after another in this process.
``local``: a pool of processes on this machine, each taking the next (seed, teacher) group of the
grid (a teacher and its students, so no teacher is trained twice), with ``cores / workers`` threads
each, all logging to one MLflow store (an SQLite file is served by an ``mlflow server`` started for
the pool, since SQLite does not take concurrent writers well). A group runs as one shard of the
sweep (:func:`robdistill.experiments.sweep.run_sweep`), so a pool's runs merge, resume and report
exactly as shards do: run the same command again and the finished cells are read back, not rerun.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

from robdistill.config.settings import Settings
from robdistill.core.errors import UserError
from robdistill.core.registry import Registry
from robdistill.experiments.specs import SweepSpec

EXECUTORS: Registry[str] = Registry("executor")
EXECUTORS.register("serial", help="Every cell in this process, one after another (the default).")("serial")
EXECUTORS.register("local", help="A pool of --workers processes on this machine, one (seed, teacher) group each at a "
                                 "time, threads per worker = cores / workers, one MLflow store.")("local")
EXECUTORS.register("slurm", help="A Slurm job array through submitit, one task per (seed, teacher) group, all logging "
                                 "to one MLflow server the nodes reach; a preempted or requeued task resumes.")("slurm")
SERVER_START_SECONDS = 90


@dataclass(frozen=True)
class LocalPool:
    """``workers`` processes of ``threads`` torch threads each."""

    workers: int
    threads: int

    @classmethod
    def for_machine(cls, workers: int | None, cores: int | None = None) -> "LocalPool":
        """``workers`` (default: one per core) with ``cores // workers`` threads each (at least 1)."""
        cores = cores or os.cpu_count() or 1
        workers = cores if workers is None else workers
        if workers < 1:
            raise UserError(f"--workers must be >= 1; got {workers}")
        return cls(workers, max(1, cores // workers))

    def describe(self) -> str:
        cores = os.cpu_count() or 1
        return (f"local pool: {self.workers} worker process{'es' if self.workers != 1 else ''} x {self.threads} "
                f"thread{'s' if self.threads != 1 else ''} ({self.workers * self.threads} of {cores} cores)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(uri: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextmanager
def shared_store(tracking_uri: str | None, log_dir: Path) -> Iterator[str]:
    """A tracking URI every worker can write to at once: a server's as it is; for an SQLite file, an
    ``mlflow server`` on a free localhost port for the duration, over the same file and with the
    artifact root a local client uses (``./mlruns``), so that the runs read back the same afterwards
    through the file. The server's output goes to ``log_dir/mlflow-server.log``."""
    from robdistill.tracking import store as tracking
    from robdistill.tracking.search import stop_group

    uri = tracking.resolve_tracking_uri(tracking_uri)
    if uri.startswith(("http://", "https://")):
        yield uri
        return
    if not uri.startswith("sqlite:///"):
        raise UserError(f"--executor local needs an SQLite store or a tracking server; got {uri}")
    database = Path(uri[len("sqlite:///"):]).resolve()
    port = _free_port()
    served = f"http://127.0.0.1:{port}"
    log_dir.mkdir(parents=True, exist_ok=True)
    log = open(log_dir / "mlflow-server.log", "ab")
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{database}",
               "--default-artifact-root", str(Path.cwd() / "mlruns"), "--no-serve-artifacts",
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    from robdistill.tracking.search import lean_server_env

    child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                             env=lean_server_env())
    try:
        deadline = time.monotonic() + SERVER_START_SECONDS
        while not _healthy(served):
            if child.poll() is not None or time.monotonic() > deadline:
                raise UserError(f"the mlflow server for the pool did not start (see {log_dir / 'mlflow-server.log'}); "
                                f"start one yourself and pass --tracking-uri http://...")
            time.sleep(0.5)
        yield served
    finally:
        stop_group(child)
        log.close()


def _init_worker(threads: int) -> None:
    import torch

    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"  # the pool's server is gone once it ends
    torch.set_num_threads(threads)


def _run_group(settings: Settings, spec: SweepSpec, shard: tuple[int, int]) -> tuple[int, float]:
    """One (seed, teacher) group as shard ``shard`` of the sweep, in a worker process."""
    from robdistill.experiments.sweep import run_sweep

    started = time.perf_counter()
    outcome = run_sweep(settings, spec, shard=shard)
    return len(outcome.cells), time.perf_counter() - started


@dataclass
class PoolResult:
    """What a pool ran: the sweep's name and store, and the groups that failed (shard, message)."""

    tracking_uri: str
    failed: list[tuple[int, str]]


def run_pool(settings: Settings, pool: LocalPool, groups: list[tuple[int, str]], spec: SweepSpec,
             on_event: Callable[[str], None] | None = None) -> PoolResult:
    """Run every (seed, teacher) group of a grid in ``pool`` (group j as shard j + 1 of len(groups)),
    each worker a fresh process (spawned, with its own thread count), all logging to one store.
    ``spec``: the sweep's grid (:class:`~robdistill.experiments.specs.SweepSpec`). A failed group is reported and the
    others go on; the caller reads the merged sweep back from the store."""
    import multiprocessing

    say = on_event or (lambda text: None)
    with shared_store(settings.tracking_uri, settings.cache_dir / "logs") as uri:
        worker_settings = replace(settings, tracking_uri=uri, progress=False)
        failed: list[tuple[int, str]] = []
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(pool.workers, mp_context=context, initializer=_init_worker,
                                 initargs=(pool.threads,)) as executor:
            running: dict[Future, tuple[int, tuple[int, str], float]] = {}
            queue = list(enumerate(groups, 1))
            try:
                while queue or running:
                    while queue and len(running) < pool.workers:
                        k, group = queue.pop(0)
                        future = executor.submit(_run_group, worker_settings, spec, (k, len(groups)))
                        running[future] = (k, group, time.perf_counter())
                        say(f"[group {k}/{len(groups)}] seed {group[0]}, teacher {group[1]}: started")
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        k, group, started = running.pop(future)
                        minutes = (time.perf_counter() - started) / 60
                        try:
                            cells, _ = future.result()
                            say(f"[group {k}/{len(groups)}] seed {group[0]}, teacher {group[1]}: {cells} evaluations "
                                f"in {minutes:.1f} min")
                        except Exception as exc:  # noqa: BLE001 - a failed group is reported, the others go on
                            message = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                            failed.append((k, message))
                            say(f"[group {k}/{len(groups)}] seed {group[0]}, teacher {group[1]}: FAILED after "
                                f"{minutes:.1f} min: {message}")
            except KeyboardInterrupt:
                executor.shutdown(wait=True, cancel_futures=True)
                raise
    from robdistill.tracking.store import resolve_tracking_uri

    return PoolResult(resolve_tracking_uri(settings.tracking_uri), failed)  # the pool's own server is gone


@dataclass(frozen=True)
class SlurmOptions:
    """What each array task asks Slurm for (submitit's ``slurm_*`` parameters): ``extra`` passes any
    other ``#SBATCH`` setting through (``{"qos": "low"}``)."""

    partition: str | None = None
    time_minutes: int = 240
    cpus: int = 1
    gpus: int = 0
    mem: str | None = None
    parallelism: int | None = None  # at most this many tasks at once (the array's %N)
    extra: tuple[tuple[str, str], ...] = ()

    def parameters(self) -> dict[str, Any]:
        params: dict[str, Any] = {"timeout_min": self.time_minutes, "cpus_per_task": self.cpus,
                                  "slurm_signal_delay_s": 120}
        if self.partition:
            params["slurm_partition"] = self.partition
        if self.gpus:
            params["slurm_gpus_per_node"] = self.gpus
        if self.mem:
            params["slurm_mem"] = self.mem
        if self.parallelism:
            params["slurm_array_parallelism"] = self.parallelism
        if self.extra:
            params["slurm_additional_parameters"] = dict(self.extra)
        return params


class GroupTask:
    """One array task: a (seed, teacher) group as shard ``k`` of the sweep, with ``threads`` torch
    threads. Checkpointable: when Slurm preempts or times out the task, submitit requeues it with the
    same arguments, and the rerun skips the cells the store holds as finished and continues an
    interrupted training or evaluation from its saved state (``resume``)."""

    def __init__(self, settings: Settings, spec: SweepSpec, threads: int) -> None:
        self.settings, self.spec, self.threads = replace(settings, resume=True), spec, threads

    def __call__(self, shard: tuple[int, int]) -> int:
        _init_worker(self.threads)
        return _run_group(self.settings, self.spec, shard)[0]

    def checkpoint(self, shard: tuple[int, int]) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self, shard)


@dataclass
class SlurmSubmission:
    """A submitted array: its job id, the submitit jobs (one per group) and the folder of their logs."""

    job_id: str
    jobs: list
    folder: Path


def submit_slurm(settings: Settings, options: SlurmOptions, groups: list[tuple[int, str]], spec: SweepSpec,
                 tracking_uri: str, folder: Path) -> SlurmSubmission:
    """Submit every (seed, teacher) group of a grid as one Slurm job array (submitit), each task
    logging to ``tracking_uri`` (a server the nodes reach)."""
    import logging

    import submitit

    logging.getLogger("submitit").setLevel(logging.ERROR)  # no sacct on a cluster without accounting: not ours
    executor = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
    executor.update_parameters(name="robdistill-sweep", **options.parameters())
    task = GroupTask(replace(settings, tracking_uri=tracking_uri, progress=False), spec, options.cpus)
    jobs = executor.map_array(task, [(k, len(groups)) for k in range(1, len(groups) + 1)])
    return SlurmSubmission(str(jobs[0].job_id).split("_")[0], jobs, folder)


def wait_slurm(submission: SlurmSubmission, groups: list[tuple[int, str]],
               on_event: Callable[[str], None] | None = None) -> list[tuple[int, str]]:
    """Wait for every task of ``submission``; the groups that failed (shard, message)."""
    say = on_event or (lambda text: None)
    failed = []
    for k, (job, group) in enumerate(zip(submission.jobs, groups), 1):
        try:
            cells = job.result()
            say(f"[group {k}/{len(groups)}] seed {group[0]}, teacher {group[1]}: {cells} evaluations (job {job.job_id})")
        except Exception as exc:  # noqa: BLE001 - a failed task is reported, the others go on
            message = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:300]
            failed.append((k, message))
            say(f"[group {k}/{len(groups)}] seed {group[0]}, teacher {group[1]}: FAILED (job {job.job_id}, log in "
                f"{submission.folder}): {message}")
    return failed


__all__ = ["EXECUTORS", "LocalPool", "PoolResult", "run_pool", "shared_store", "SlurmOptions", "GroupTask",
           "SlurmSubmission", "submit_slurm", "wait_slurm"]
