#!/usr/bin/env bash
# Runs a command against a real Waystation server started for it:
#   scripts/with_server.sh CMD [ARGS...]
# The server listens on a free loopback port with a fresh SQLite file, serves the example
# workflows and the test workflows (tests.support.workflows), and is stopped afterwards.
# The command sees WAYSTATION_ADDRESS=127.0.0.1:PORT. Exit code: the command's.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$here/.venv/bin/python}
dir=$(mktemp -d)
port=$("$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" "$python" -m waystation.cli serve \
  --listen "127.0.0.1:$port" --db "sqlite:///$dir/waystation.db" \
  --workflows waystation.examples --workflows tests.support.workflows \
  >"$dir/server.log" 2>&1 &
server=$!
cleanup() {
  kill -TERM "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
for _ in $(seq 1 100); do
  if "$python" -m waystation.healthcheck "127.0.0.1:$port" 2>/dev/null; then break; fi
  if ! kill -0 "$server" 2>/dev/null; then cat "$dir/server.log" >&2; exit 1; fi
  sleep 0.1
done
"$python" -m waystation.healthcheck "127.0.0.1:$port" || { cat "$dir/server.log" >&2; exit 1; }
export WAYSTATION_ADDRESS="127.0.0.1:$port"
export WAYSTATION_TEST_LOG_DIR="$dir"
"$@"
