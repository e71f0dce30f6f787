#!/usr/bin/env bash
# Regenerates clients/go/waystationv1 from protos/ with pinned plugin versions:
#   clients/go/generate.sh            (buf from $BUF, default `buf`)
# The plugins are installed into clients/go/.bin (gitignored). Their versions match the
# google.golang.org/protobuf and google.golang.org/grpc requirements in go.mod, so the
# generated code and the runtime it imports move together. The output is deterministic:
# CI regenerates and fails on any difference.
set -euo pipefail
PROTOC_GEN_GO_VERSION=v1.36.12      # google.golang.org/protobuf, same as go.mod
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2   # google.golang.org/grpc/cmd/protoc-gen-go-grpc

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
buf=${BUF:-buf}

# protoc-gen-go must be the google.golang.org/protobuf release that go.mod requires.
required=$(cd "$here" && go list -m -f '{{.Version}}' google.golang.org/protobuf)
if [[ "$required" != "$PROTOC_GEN_GO_VERSION" ]]; then
  echo "generate.sh pins protoc-gen-go $PROTOC_GEN_GO_VERSION but go.mod requires" \
    "google.golang.org/protobuf $required: make them the same" >&2
  exit 1
fi

export GOBIN="$here/.bin"
install() { # install PACKAGE VERSION unless .bin already has that version
  local name=${1##*/}
  local stamp="$GOBIN/.$name.version"
  if [[ -x "$GOBIN/$name" && "$(cat "$stamp" 2>/dev/null)" == "$2" ]]; then return; fi
  go install "$1@$2"
  echo "$2" >"$stamp"
}
install google.golang.org/protobuf/cmd/protoc-gen-go "$PROTOC_GEN_GO_VERSION"
install google.golang.org/grpc/cmd/protoc-gen-go-grpc "$PROTOC_GEN_GO_GRPC_VERSION"

# Remove the old output first so that a deleted proto leaves no stale file behind.
rm -f "$here"/waystationv1/*.pb.go
cd "$root"
"$buf" generate --template clients/go/buf.gen.yaml
