#!/usr/bin/env bash
# Installs (pinned by package-lock.json) and starts the local AWS stand-ins on
# 127.0.0.1, or stops them. Used by `make test` and `make bench`.
#
#   scripts/standins/standins.sh start   # prints `export AWS_...` lines to eval
#   scripts/standins/standins.sh stop    # stops what start started, by PID
#
# DynamoDB: dynoxide (npm @dynoxide/linux-x64, a static binary, in-memory).
# SQS:      local-aws-sqs (npm), started by sqs-server.js.
# S3 needs no process: tests run gofakes3 in-process.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
run="${STANDINS_RUN_DIR:-$here/.run}"
dyn_port="${STANDINS_DYNAMODB_PORT:-18000}"
sqs_port="${STANDINS_SQS_PORT:-19324}"

wait_port() { # name port pid
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then return 0; fi
    if ! kill -0 "$3" 2>/dev/null; then echo "standins: $1 exited at start; log:" >&2; cat "$run/$1.log" >&2; return 1; fi
    sleep 0.1
  done
  echo "standins: $1 did not answer on port $2" >&2
  return 1
}

start() {
  mkdir -p "$run"
  stop >/dev/null 2>&1 || true
  if [ ! -x "$here/node_modules/@dynoxide/linux-x64/dynoxide" ] || [ ! -d "$here/node_modules/local-aws-sqs" ]; then
    command -v npm >/dev/null || { echo "standins: npm is required (apt-get install nodejs npm)" >&2; exit 1; }
    (cd "$here" && npm ci --no-audit --no-fund --loglevel=error) >&2
  fi
  "$here/node_modules/@dynoxide/linux-x64/dynoxide" serve --host 127.0.0.1 --port "$dyn_port" >"$run/dynamodb.log" 2>&1 &
  echo $! >"$run/dynamodb.pid"
  PORT="$sqs_port" node "$here/sqs-server.js" >"$run/sqs.log" 2>&1 &
  echo $! >"$run/sqs.pid"
  wait_port dynamodb "$dyn_port" "$(cat "$run/dynamodb.pid")"
  wait_port sqs "$sqs_port" "$(cat "$run/sqs.pid")"
  cat <<ENV
export AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:$dyn_port
export AWS_ENDPOINT_URL_SQS=http://127.0.0.1:$sqs_port
export AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID=test
export AWS_SECRET_ACCESS_KEY=test
ENV
}

stop() {
  for name in dynamodb sqs; do
    f="$run/$name.pid"
    [ -f "$f" ] || continue
    pid="$(cat "$f")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$f"
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
