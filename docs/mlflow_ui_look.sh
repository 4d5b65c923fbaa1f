#!/usr/bin/env bash
# A look at what the MLflow UI shows of a store, in a headless browser (not part of the tests:
# it needs `apt-get install chromium-headless-shell`, which the project does not install).
#
#   bash docs/mlflow_ui_look.sh [sqlite:////abs/path/mlflow.db] [experiment id] [out dir]
#
# Writes two screenshots: plain.png, the experiment as a fresh browser opens it (MLflow 3.17: the
# GenAI overview), and runs.png, the link `tracking_view.runs_url` gives (the runs, compared).
set -euo pipefail
STORE=${1:-sqlite:///$HOME/.cache/maskaware/mlflow.db}
EXP=${2:-1}
OUT=${3:-mlflow-ui-look}
PORT=5077
HERE=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
set -m  # the server gets its own process group, which the trap ends as a whole
MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false "$HERE/.venv/bin/mlflow" server --host 127.0.0.1 \
    --port $PORT --workers 1 --backend-store-uri "$STORE" >"$OUT/server.log" 2>&1 &
SERVER=$!
trap 'kill -- -$SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 120); do curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 1; done
RUNS=$(cd "$HERE" && .venv/bin/python -c \
    "from pipeline.tracking_view import runs_url; print(runs_url('http://127.0.0.1:$PORT', '$EXP'))")
shot() {  # url file
    chromium-headless-shell --no-sandbox --disable-gpu --window-size=1800,800 \
        --virtual-time-budget=20000 --screenshot="$2" "$1" 2>/dev/null
}
shot "http://127.0.0.1:$PORT/#/experiments/$EXP" "$OUT/plain.png"
shot "$RUNS" "$OUT/runs.png"
echo "$OUT/plain.png: the experiment as a fresh browser opens it; $OUT/runs.png: $RUNS"
