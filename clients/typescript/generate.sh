#!/usr/bin/env bash
# Generates the TypeScript code in src/gen/ (checked in, never edited by hand) from
# ../../protos (waystation.v1) and proto-vendor/ (google.rpc error details), with buf and the
# local protoc-gen-es pinned in package.json. buf comes from $BUF (default: `buf` on PATH;
# the project's venv ships one as .venv/bin/buf).
set -euo pipefail
buf=${BUF:-buf}
case "$buf" in */*) buf=$(cd "$(dirname "$buf")" && pwd)/$(basename "$buf") ;; esac
cd "$(dirname "$0")"
if [ ! -x node_modules/.bin/protoc-gen-es ]; then
  npm ci --no-audit --no-fund
fi
# buf.gen.yaml names the inputs and sets `clean: true`, so stale files disappear.
"$buf" generate --template buf.gen.yaml
