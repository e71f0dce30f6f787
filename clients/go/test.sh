#!/usr/bin/env bash
# Vets and tests the Go client against a real server. From the repository root:
#   scripts/with_server.sh clients/go/test.sh
# (with_server.sh exports WAYSTATION_ADDRESS; without it the end-to-end tests fail.)
set -euo pipefail
cd "$(dirname "$0")"
go mod download
unformatted=$(gofmt -l .)
if [[ -n "$unformatted" ]]; then
  echo "gofmt: these files need formatting:" >&2
  echo "$unformatted" >&2
  exit 1
fi
go vet ./...
go test ./... -count=1 -v
