#!/usr/bin/env bash
# Builds the Java client (generating its gRPC code from ../../protos) and runs its tests against
# the server at WAYSTATION_ADDRESS. From the repo root:
#   scripts/with_server.sh clients/java/test.sh
# Maven's repository lives in clients/java/.m2 (gitignored), so CI can cache it in the clone.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mvn=(mvn -B --no-transfer-progress -f "$here/pom.xml" "-Dmaven.repo.local=$here/.m2")
# Fetch the dependencies and plugins first, quietly, so that the output below stays readable
# (protoc and protoc-gen-grpc-java are fetched by the build itself, into the same .m2).
"${mvn[@]}" -q dependency:go-offline
# Not -q: Surefire's "Tests run: ..." lines are the result that people and CI read.
"${mvn[@]}" test
