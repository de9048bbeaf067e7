#!/usr/bin/env bash
# make stop: end what `make demo` started in the background.
set -uo pipefail
cd "$(dirname "$0")/.."
for name in serve prefect-server; do
  pidfile=".online-cut/$name.pid"
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -9 "$pid" 2>/dev/null || true
    echo "stopped $name (pid $pid)"
  fi
  rm -f "$pidfile"
done
# `make demo` pointed the prefect CLI's profile at its server; without it, flows started later
# (`online-cut run`) would try to reach a server that is gone instead of starting their own.
.venv/bin/prefect config unset PREFECT_API_URL -y >/dev/null 2>&1 && echo "prefect CLI: PREFECT_API_URL unset"
