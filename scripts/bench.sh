#!/usr/bin/env bash
# `make bench`: every side-by-side comparison in benchmarks/, results in benchmarks/results/
# (RESULTS.md, results.json, PNG plots). The orchestrator runs in the runtime venv; it
# starts servers from their own venvs (serving: MLServer, control: `airloop up`).
# Arguments go to `python -m benchmarks.run` (e.g. --only prediction,drift).
set -euo pipefail
cd "$(dirname "$0")/.."
VENVS=${AIRLOOP_VENVS:-.venvs}
for env in runtime serving control; do
  if [ ! -x "$VENVS/$env/bin/python" ]; then
    echo "error: $VENVS/$env is missing; run scripts/bootstrap.sh first" >&2
    exit 1
  fi
done
export DO_NOT_TRACK=true MLFLOW_DISABLE_TELEMETRY=true DVC_NO_ANALYTICS=1 FEAST_USAGE=False \
       GX_ANALYTICS_ENABLED=false RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled \
       SCARF_ANALYTICS=false AIRLOOP_VENVS="$(cd "$VENVS" && pwd)"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$VENVS/runtime/bin/python" -m benchmarks.run "$@"
