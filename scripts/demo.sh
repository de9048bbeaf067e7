#!/usr/bin/env bash
# make demo: a local Prefect server and the online-cut deployment in the background, then a
# 2-round run of configs/quickstart.yaml watched to the end, then what it produced.
# `make stop` ends the server and the deployment.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
STATE=.online-cut
PORT=${PREFECT_PORT:-4200}
export PREFECT_API_URL="http://127.0.0.1:${PORT}/api"
export PREFECT_SERVER_ANALYTICS_ENABLED=false
# Flow runs send a heartbeat a minute (Prefect's default: 3); `online-cut serve` creates the
# automation that marks a run Crashed after three missed ones, e.g. one killed and never resumed.
export PREFECT_FLOWS_HEARTBEAT_FREQUENCY=${PREFECT_FLOWS_HEARTBEAT_FREQUENCY:-60}
mkdir -p "$STATE"

wait_for() {  # wait_for SECONDS WHAT COMMAND...
  local seconds=$1 what=$2; shift 2
  for _ in $(seq "$seconds"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  echo "demo: $what did not come up in ${seconds}s (logs in $STATE/)" >&2; return 1
}

# Clients started from any shell (the `prefect` CLI, the UI links) use this server.
"$BIN/prefect" config set PREFECT_API_URL="$PREFECT_API_URL" >/dev/null

if ! curl -sf "$PREFECT_API_URL/health" >/dev/null; then
  echo "demo: starting the Prefect server on 127.0.0.1:$PORT"
  nohup "$BIN/prefect" server start --host 127.0.0.1 --port "$PORT" >"$STATE/prefect-server.log" 2>&1 &
  echo $! >"$STATE/prefect-server.pid"
  wait_for 180 "the Prefect server" curl -sf "$PREFECT_API_URL/health"
fi

if ! { [ -f "$STATE/serve.pid" ] && kill -0 "$(cat "$STATE/serve.pid")" 2>/dev/null; }; then
  echo "demo: serving the deployment online-cut/online-cut"
  nohup "$BIN/online-cut" serve --config configs/quickstart.yaml >"$STATE/serve.log" 2>&1 &
  echo $! >"$STATE/serve.pid"
  wait_for 180 "the deployment" "$BIN/prefect" deployment inspect online-cut/online-cut
fi

run="demo-$(date +%Y%m%d-%H%M%S)"
echo "demo: 2 rounds as run $run (the first round starts the vLLM engine: 2-3 minutes on 2 cores)"
# The served flow's own progress lines (sampling, judged, training steps, held-out scores, the
# gate), shown beside the state events the watch prints. Only the follower is stopped after it:
# the server and the deployment started above are this shell's jobs too and must keep running.
tail -n0 -F --pid=$$ "$STATE/serve.log" 2>/dev/null > >(grep --line-buffered -E ' - (round [0-9]+: |training step )') &
follower=$!
"$BIN/prefect" deployment run online-cut/online-cut -p rounds=2 -p run="$run" --watch
kill "$follower" 2>/dev/null || true

echo
"$BIN/online-cut" sql "SELECT round, responses, positive_share, round(last_loss, 3) AS loss,
    eval_incumbent, eval_candidate, gate_decision, round(wall_s) AS wall_s,
    round(100 * overhead_share, 1) AS overhead_pct FROM round_summary WHERE run = '$run'"
# Each attach's proof that the engine served the adapter the trainer wrote (docs/adapter-check.md).
"$BIN/online-cut" sql "SELECT round, step, verdict, round(position, 2) AS position,
    round(separation, 1) AS separation, round(fingerprint_mean_abs, 4) AS distance, round(noise_mean_abs, 4) AS noise
    FROM adapter_checks WHERE run = '$run' ORDER BY round, step"
cat <<MSG

The Prefect UI shows the run, one sub-run per round and their artifacts:
  http://127.0.0.1:${PORT}
Query the stored triples, e.g.:
  .venv/bin/online-cut sql "SELECT round, verdict, count(*) FROM triples WHERE run = '$run' GROUP BY ALL ORDER BY ALL"
Start another run:  .venv/bin/prefect deployment run online-cut/online-cut -p rounds=3 --watch
Stop the server and the deployment:  make stop
MSG
