#!/usr/bin/env bash
# Builds the package and its tests, then runs the end-to-end tests against the server at
# $WAYSTATION_ADDRESS. From the repository root:
#   scripts/with_server.sh clients/typescript/test.sh
set -euo pipefail
cd "$(dirname "$0")"
: "${WAYSTATION_ADDRESS:?run via scripts/with_server.sh, which starts a server and sets it}"
if [ ! -d node_modules ]; then
  npm ci --no-audit --no-fund
fi
rm -rf dist dist-test
npx --no-install tsc -p tsconfig.json
npx --no-install tsc -p tsconfig.test.json
# One file at a time: connection.test.js starts (and kills) servers of its own, which must not
# slow the timed tests of another file.
node --test --test-concurrency=1 --test-reporter=spec dist-test/*.test.js
