#!/usr/bin/env bash
# The Fashion-MNIST study (issue 28) as it runs here: one `mlflow server` over the study's SQLite store
# and the sweep on the local executor, two worker processes of one thread each (one per core), each
# taking the next (seed, teacher) group. Run it again after an interruption (a session's end stops
# it): the sweep reads back the cells it finished, and --resume continues an interrupted teacher
# training or evaluation from its saved state.
#
#   benchmarks/fmnist_study.sh [STUDY_DIR]       (default /work/study; WORKERS=2, PORT=5077)
#   robdistill sweep-status sweep-4de719d2fea2 --experiment fmnist-study --tracking-uri http://127.0.0.1:5077
#
# ROBDISTILL names the robdistill to run (the study runs a frozen worktree: `git worktree add <dir>
# <commit>` and a wrapper that runs `python -m robdistill.cli` with PYTHONPATH=<dir>).
# (Until 2026-12-07 15:3x the same sweep ran as its 25 shards, `--shard k/25`, on two shell lanes; the
# executor runs group k as shard k/25 too, so the two are one sweep.)
set -euo pipefail
STUDY=${1:-/work/study}
WORKERS=${WORKERS:-2}
PORT=${PORT:-5077}
ROBDISTILL=${ROBDISTILL:-robdistill}
MLFLOW=${MLFLOW:-mlflow}
# yield to interactive work: `nice` alone does not, where the kernel groups processes by session
# (autogroup), so the whole group gets the lowest weight too
echo 19 > /proc/self/autogroup 2>/dev/null || true
mkdir -p "$STUDY/logs"
cd "$STUDY"
export MLFLOW_TRACKING_URI=http://127.0.0.1:$PORT
if ! curl -sf "$MLFLOW_TRACKING_URI/health" >/dev/null 2>&1; then
  # one user: MLflow 3's job runners (seven more processes) off, as `robdistill ui` runs it
  MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false nohup "$MLFLOW" server --backend-store-uri "sqlite:///$STUDY/mlflow.db" --artifacts-destination "$STUDY/artifacts" \
      --host 127.0.0.1 --port "$PORT" --workers 1 >> logs/mlflow-server.log 2>&1 &
  for _ in $(seq 60); do curl -sf "$MLFLOW_TRACKING_URI/health" >/dev/null 2>&1 && break; sleep 1; done
fi
exec nice -n 15 "$ROBDISTILL" sweep --dataset fashion-mnist --teachers standard,at,alp,aalp,trades \
    --perturbs keep,nonmax-shuffle,nonmax-flatten,nonmax-flatten-mean,onehot,confidence-swap \
    --seeds 0,1,2,3,4 --suite fmnist-study --cache-dir "$STUDY/cache" --no-registry --device cpu \
    --experiment fmnist-study --executor local --workers "$WORKERS" --resume --quiet \
    --out "$STUDY/fashion_mnist_study.md"
