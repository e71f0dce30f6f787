#!/usr/bin/env bash
# The client's end-to-end tests, in a venv of its own that holds the installed client and
# the test tools only: proof that `pip install ./clients/python` needs nothing of the server.
#
#   scripts/with_server.sh clients/python/test.sh [PYTEST ARGS...]      (from the repo root)
#
# with_server.sh starts a real server and exports WAYSTATION_ADDRESS. The venv lives in
# clients/python/.venv; the client is reinstalled only when its sources changed, so a
# second run goes straight to the tests. PYTHON picks the interpreter (default: python3).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv="$here/.venv"
pip=("$venv/bin/python" -m pip --quiet)
unset PYTHONPATH # the server's sources must not leak into the client's venv

if ! "$venv/bin/python" -c '' 2>/dev/null; then
  "${PYTHON:-python3}" -m venv --clear "$venv"
fi

# What the installed client was built from (generated code included).
stamp=$(cd "$here" && find pyproject.toml README.md src tests/requirements.txt -type f \
  -not -path '*/__pycache__/*' -not -path '*.egg-info/*' | LC_ALL=C sort | xargs sha256sum |
  sha256sum)
if [[ "$(cat "$venv/.installed" 2>/dev/null)" != "$stamp" ]]; then
  rm -f "$venv/.installed"
  # setuptools builds in the source tree; a stale build/ could smuggle in deleted modules.
  rm -rf "$here/build" "$here"/src/*.egg-info
  "${pip[@]}" install "$here"
  rm -rf "$here/build" "$here"/src/*.egg-info
  # None of the server's dependencies may come with the client.
  if "${pip[@]}" list --format=freeze |
    grep -iE '^(waystation|pydantic|pydantic[-_]core|aiosqlite|asyncpg|opentelemetry[-_a-z]*|typer|rich)=='; then
    echo "test.sh: the client pulled in server dependencies (listed above)" >&2
    exit 1
  fi
  "${pip[@]}" check
  "${pip[@]}" install -r "$here/tests/requirements.txt"
  echo "$stamp" >"$venv/.installed"
fi

cd "$here" # the client's own pytest settings; `src` is not on the path: the installed copy runs
"$venv/bin/python" -c 'import waystation_client as w; assert "site-packages" in w.__file__, w.__file__'
exec "$venv/bin/python" -m pytest "$@"
