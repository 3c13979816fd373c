#!/usr/bin/env bash
# Create the three pinned environments (.venvs/{control,runtime,serving}) from the lock
# files, idempotently: an environment whose lock files hash to its stamp is skipped.
# control <- requirements/control.lock + test.lock; runtime <- runtime.lock + test.lock;
# serving <- serving.lock. The airloop package goes in editable, --no-deps, everywhere.
# Prints one line per environment. Usage: scripts/bootstrap.sh [env ...]
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENVS="${AIRLOOP_VENVS:-$REPO/.venvs}"
PYTHON_VERSION="${AIRLOOP_PYTHON:-3.11}"
UV_VERSION="0.13.8"
cd "$REPO"

if command -v uv >/dev/null 2>&1; then
  UV=(uv)
elif python3 -m uv --version >/dev/null 2>&1; then
  UV=(python3 -m uv)
else
  python3 -m pip install --quiet "uv==$UV_VERSION" >/dev/null
  UV=(python3 -m uv)
fi

locks_for() {
  case "$1" in
    control) echo "requirements/control.lock requirements/test.lock" ;;
    runtime) echo "requirements/runtime.lock requirements/test.lock" ;;
    serving) echo "requirements/serving.lock" ;;
    *) echo "error: unknown environment '$1' (control, runtime, serving)" >&2; return 1 ;;
  esac
}

envs=("$@")
[ ${#envs[@]} -eq 0 ] && envs=(control runtime serving)

for env in "${envs[@]}"; do
  locks=$(locks_for "$env")
  # The stamp covers the locks and the package metadata (an editable install records it).
  hash=$(cat $locks pyproject.toml | sha256sum | cut -c1-16)
  target="$VENVS/$env"
  stamp="$target/.airloop-lock-hash"
  if [ -x "$target/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$hash" ]; then
    echo "$env: up to date ($target, lock $hash)"
    continue
  fi
  start=$(date +%s)
  log="$(mktemp)"
  {
    [ -x "$target/bin/python" ] || "${UV[@]}" venv --python "$PYTHON_VERSION" "$target"
    for lock in $locks; do
      "${UV[@]}" pip install --python "$target/bin/python" -r "$lock"
    done
    "${UV[@]}" pip install --python "$target/bin/python" --no-deps -e "$REPO"
  } >"$log" 2>&1 || { echo "$env: FAILED, see $log" >&2; tail -5 "$log" >&2; exit 1; }
  rm -f "$log"
  echo "$hash" >"$stamp"
  echo "$env: installed in $(( $(date +%s) - start ))s ($target, lock $hash)"
done
