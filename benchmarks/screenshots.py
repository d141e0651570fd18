"""The README's screenshots, produced by the commands the README gives: a small digits sweep logged
to a real `mlflow server` on loopback, its MLflow runs view (table and chart view: the address
`robdistill sweep` prints) and its `robdistill report` page, each rendered by headless Chromium;
and, at 1600 x 1000 as a newcomer's window shows them, the runs view uncropped, one `run`'s page
with its logged models, and the experiment's landing page (from robdistill's address, and from
MLflow's own experiment list).

    python benchmarks/screenshots.py --out docs/images [--cache-dir .robdistill] [--workdir DIR]

The sweep (3 teachers x 3 perturbations x 3 seeds, the `smoke` suite on all 359 test images) reuses
the teachers in ``--cache-dir`` and trains the missing ones. The commands it ran are written to
``<out>/screenshots.txt``. MLflow's assistant panel (right-hand side, open by default in a fresh
browser profile) is cropped off. With ``--workdir`` the server's store stays there, and a second
call with the same ``--workdir`` takes the screenshots again without re-running the sweep."""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from robdistill.tracking.views import experiment_url, run_url, share_runs_view, view_url

SWEEP = ["--teachers", "standard,at,alp", "--perturbs", "keep,nonmax-shuffle,nonmax-flatten", "--seeds", "0,1,2",
         "--suite", "smoke", "--n-eval", "359", "--quiet"]
ASSISTANT_PANEL = 0.26  # the share of the window's width that MLflow's assistant panel takes at the right


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"{url} did not answer within {timeout:.0f} s")


def screenshot(url: str, path: Path, size: tuple[int, int], profile: Path, crop_right: float = 0.0) -> None:
    """``url`` rendered at ``size`` after 60 s of virtual time (charts draw late), minus the right
    ``crop_right`` share of its width."""
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("chromium is not installed: apt-get install chromium (Debian)")
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--hide-scrollbars", f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
                    "--virtual-time-budget=60000", f"--screenshot={path}", url],
                   check=True, capture_output=True, timeout=300)
    if crop_right:
        from PIL import Image

        with Image.open(path) as image:
            image.crop((0, 0, round(image.width * (1 - crop_right)), image.height)).save(path)


def first_run(address: str) -> tuple[str, str]:
    """The experiment id and the first `run` row (a sweep cell) of the store behind ``address``,
    after sharing the runs view on it as the current code shares it (``robdistill ui`` does the
    same for a store written by an earlier version)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=address)
    experiment = client.get_experiment_by_name("robdistill")
    mlflow.set_tracking_uri(address)
    share_runs_view(experiment)
    (run,) = client.search_runs([experiment.experiment_id], "tags.stage = 'run'", max_results=1)
    return experiment.experiment_id, run.info.run_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    parser.add_argument("--cache-dir", type=Path, default=Path(".robdistill"))
    parser.add_argument("--workdir", type=Path, default=None,
                        help="Keep the server's store here (default: a temporary folder); reused when it has the sweep.")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    robdistill = [sys.executable, "-m", "robdistill.cli"]
    with tempfile.TemporaryDirectory(prefix="robdistill-screenshots-") as tmp:
        root, port = (args.workdir or Path(tmp)).resolve(), free_port()
        root.mkdir(parents=True, exist_ok=True)
        printed_file = root / "sweep.out"
        address = f"http://127.0.0.1:{port}"
        server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                                   f"sqlite:///{root / 'server.db'}", "--artifacts-destination", str(root / "artifacts"),
                                   "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                                  env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
        try:
            wait_for(f"{address}/health")
            sweep = [*robdistill, "sweep", *SWEEP, "--tracking-uri", address, "--cache-dir", str(args.cache_dir)]
            if not printed_file.is_file():
                printed_file.write_text(subprocess.run(sweep, check=True, capture_output=True, text=True).stdout)
            printed = printed_file.read_text()
            name = re.search(r"sweep name (\S+),", printed).group(1)
            experiment, run_id = first_run(address)  # and the view shared as the current code shares it
            view = view_url(address, experiment)
            report = args.out / "report.html"
            subprocess.run([*robdistill, "report", name, "--tracking-uri", address, "--out", str(report)],
                           check=True, capture_output=True)
            screenshot(view, args.out / "mlflow_runs_view.png", (3200, 800), root / "p1", ASSISTANT_PANEL)
            screenshot(view + "&compareRunsMode=CHART", args.out / "mlflow_chart_view.png", (2100, 1150), root / "p2",
                       ASSISTANT_PANEL)
            screenshot(report.resolve().as_uri(), args.out / "report.png", (1300, 1600), root / "p3")
            # what a newcomer's 1600 x 1000 window shows: the same view uncropped (the assistant panel
            # included), one `run`'s page with its logged models, and the experiment's landing page
            screenshot(view, args.out / "mlflow_runs_view_1600.png", (1600, 1000), root / "p4")
            screenshot(run_url(address, experiment, run_id), args.out / "mlflow_run_page_1600.png", (1600, 1000),
                       root / "p5")
            screenshot(experiment_url(address, experiment), args.out / "mlflow_landing_1600.png", (1600, 1000),
                       root / "p6")
            # the same experiment opened from MLflow's own experiment list (no workflowType in the address)
            screenshot(f"{address}/#/experiments/{experiment}", args.out / "mlflow_landing_plain_1600.png",
                       (1600, 1000), root / "p7")
            report.unlink()  # the page itself is not kept: `robdistill report` makes it
        finally:
            os.killpg(server.pid, signal.SIGTERM)  # the server and its workers
            server.wait(timeout=30)
    commands = ["robdistill " + " ".join(sweep[3:]).replace(str(args.cache_dir), "<cache>").replace(address, "<server>"),
                f"robdistill report {name} --tracking-uri <server> --out report.html"]
    (args.out / "screenshots.txt").write_text("\n".join(commands) + "\n")
    print("\n".join(commands))
    print(f"wrote {', '.join(sorted(p.name for p in args.out.glob('*.png')))} in {args.out}")


if __name__ == "__main__":
    main()
