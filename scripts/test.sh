#!/usr/bin/env bash
# Runs every test tier, each in the environment it belongs to (the three planes have
# conflicting dependencies, so there is no single interpreter that can import all).
#   control  (.venvs/control): DAG integrity, operator factory, pods, Helm chart, images
#   platform (.venvs/control): `airloop up/down/status` against real processes
#   runtime  (.venvs/runtime): steps against real MLflow, Feast, Ray, MLServer, PostgreSQL
#   e2e      (.venvs/runtime): the whole loop through the Airflow REST API
# Extra arguments go to every pytest call (e.g. -x, -k name).
set -uo pipefail
cd "$(dirname "$0")/.."
VENVS=${AIRLOOP_VENVS:-.venvs}
export DO_NOT_TRACK=true MLFLOW_DISABLE_TELEMETRY=true DVC_NO_ANALYTICS=1 \
       GX_ANALYTICS_ENABLED=false RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled
status=0
passed=0
failed=0
run_tier() {
  local name=$1 venv=$2; shift 2
  local dirs=()
  for d in "$@"; do [ -d "$d" ] && dirs+=("$d"); done
  [ ${#dirs[@]} -eq 0 ] && return 0
  echo "=== tier: $name (${dirs[*]}) ==="
  local log; log=$(mktemp)
  "$VENVS/$venv/bin/python" -m pytest -p no:cacheprovider "${dirs[@]}" "${PYTEST_ARGS[@]}" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  # pytest exit 5 = no tests collected: not a failure of the tier.
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 5 ]; then status=1; fi
  local line; line=$(grep -E '^=+ .*(passed|failed|error).* in [0-9.]+s' "$log" | tail -n 1)
  local p f e
  p=$(grep -oE '[0-9]+ passed' <<<"$line" | grep -oE '[0-9]+'); f=$(grep -oE '[0-9]+ failed' <<<"$line" | grep -oE '[0-9]+')
  e=$(grep -oE '[0-9]+ errors?' <<<"$line" | grep -oE '[0-9]+')
  passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0} + ${e:-0}))
  rm -f "$log"
}
PYTEST_ARGS=("$@")
run_tier control control tests/control
run_tier runtime runtime tests/runtime
run_tier platform control tests/platform
run_tier e2e runtime tests/e2e
echo
echo "total: $passed passed, $failed failed"
exit $status
