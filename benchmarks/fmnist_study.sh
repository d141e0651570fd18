#!/usr/bin/env bash
# The Fashion-MNIST study (issue 28) as it runs here: the sweep's 25 (seed, teacher) shards on LANES
# processes of one thread each (one per core), all logging to one `mlflow server`; each lane takes the
# next shard nobody has claimed. Run it again after an interruption: finished shards are skipped
# (done/<k>), and inside a shard the sweep skips the cells it already finished and --resume
# continues an interrupted teacher training or evaluation from its saved state.
#
#   benchmarks/fmnist_study.sh [STUDY_DIR]       (default /work/study; LANES=2, PORT=5077)
#   robdistill sweep-report <sweep name> --experiment fmnist-study --tracking-uri http://127.0.0.1:5077
#
# The grid, suite and recipes are the repository's at the commit it runs from (the study ran from a
# frozen worktree: `git worktree add <dir> <commit>` and PYTHONPATH=<dir>).
set -euo pipefail
STUDY=${1:-/work/study}
LANES=${LANES:-2}
PORT=${PORT:-5077}
ROBDISTILL=${ROBDISTILL:-robdistill}
MLFLOW=${MLFLOW:-mlflow}
SHARDS=25
GRID=(--dataset fashion-mnist --teachers standard,at,alp,aalp,trades
      --perturbs keep,nonmax-shuffle,nonmax-flatten,nonmax-flatten-mean,onehot,confidence-swap
      --seeds 0,1,2,3,4 --suite fmnist-study)
# yield to interactive work: `nice` alone does not, where the kernel groups processes by session
# (autogroup), so the whole group gets the lowest weight too
echo 19 > /proc/self/autogroup 2>/dev/null || true
mkdir -p "$STUDY"/{done,claim,logs}
cd "$STUDY"
export MLFLOW_TRACKING_URI=http://127.0.0.1:$PORT OMP_NUM_THREADS=1
if ! curl -sf "$MLFLOW_TRACKING_URI/health" >/dev/null 2>&1; then
  nohup "$MLFLOW" server --backend-store-uri "sqlite:///$STUDY/mlflow.db" --artifacts-destination "$STUDY/artifacts" \
      --host 127.0.0.1 --port "$PORT" --workers 1 > logs/mlflow-server.log 2>&1 &
  for _ in $(seq 60); do curl -sf "$MLFLOW_TRACKING_URI/health" >/dev/null 2>&1 && break; sleep 1; done
fi
rm -rf claim/*   # claims of lanes that an interruption ended
lane() {
  for k in $(seq 1 $SHARDS); do
    [ -e "done/$k" ] && continue
    mkdir "claim/$k" 2>/dev/null || continue   # atomic: another lane has it
    echo "$(date -u +%FT%TZ) lane $1: shard $k/$SHARDS" >> logs/lanes.log
    if nice -n 15 "$ROBDISTILL" sweep "${GRID[@]}" --cache-dir "$STUDY/cache" --no-registry --device cpu \
        --experiment fmnist-study --shard "$k/$SHARDS" --resume --quiet > "logs/shard-$k.log" 2>&1; then
      date -u +%FT%TZ > "done/$k"
      echo "$(date -u +%FT%TZ) lane $1: shard $k done" >> logs/lanes.log
    else
      echo "$(date -u +%FT%TZ) lane $1: shard $k FAILED (logs/shard-$k.log)" >> logs/lanes.log
    fi
  done
}
for i in $(seq 1 "$LANES"); do lane "$i" & done
wait
