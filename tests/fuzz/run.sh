#!/usr/bin/env bash
# The slow fuzzing tier: schemathesis against costroute's own /openapi.json, and long
# hypothesis runs on the duration parser, the planner and the Gemini translation.
#
#   tests/fuzz/run.sh                 # fuzz tier
#   tests/fuzz/run.sh --slow          # fuzz tier + the slow hardening tier (1,000-ticket
#                                     # SIGKILL test, 10,000-request load test)
#   FUZZ_EXAMPLES=2000 tests/fuzz/run.sh   # more examples per operation / property
#
# It runs in its own virtualenv (outside the repository), built from the project's test
# extras (schemathesis included), so a long fuzz run never shares the default .venv.
# A few fixed examples per operation also run in the default suite (tests/fuzz/test_smoke.py).
set -euo pipefail
cd "$(dirname "$0")/../.."

VENV=${FUZZ_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/costroute/fuzz-venv}
PYTHON=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
if ! { "$VENV/bin/python" -m pip install --quiet --upgrade pip &&
       "$VENV/bin/python" -m pip install --quiet -e '.[test]'; } >"$VENV/install.log" 2>&1; then
  cat "$VENV/install.log" >&2
  exit 1
fi

MARKS="fuzz"
if [ "${1:-}" = "--slow" ]; then
  MARKS="fuzz or slow"
  shift
fi
TARGETS=(tests/fuzz)
if [ "$MARKS" != "fuzz" ]; then
  TARGETS+=(tests/hardening)
fi
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider -m "$MARKS" --timeout=1800 "${TARGETS[@]}" "$@"
