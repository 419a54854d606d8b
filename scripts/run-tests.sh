#!/usr/bin/env bash
# The test gate: lint, types, then pytest against SQLite and a real PostgreSQL.
# Extra arguments go to pytest, e.g. `scripts/run-tests.sh -k ledger -x`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

readonly BIN=.venv/bin
[[ -x "$BIN/pytest" ]] || { echo "run-tests: $BIN is missing; run 'make venv' first." >&2; exit 1; }

# ensure-postgres.sh describes a throwaway cluster in this file when it has to start one.
postgres_state="$(mktemp "${TMPDIR:-/tmp}/emeterai-test-postgres.XXXXXX")"
rm -f -- "$postgres_state"
cleanup() {
    "$root/scripts/ensure-postgres.sh" stop "$postgres_state" || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

EMETERAI_TEST_POSTGRES_URL="$(
    EMETERAI_TEST_POSTGRES_STATE="$postgres_state" "$root/scripts/ensure-postgres.sh" | tail -n 1
)"
export EMETERAI_TEST_POSTGRES_URL
echo "run-tests: PostgreSQL at ${EMETERAI_TEST_POSTGRES_URL}" >&2

"$BIN/ruff" format --check src tests
"$BIN/ruff" check src tests
"$BIN/mypy"

status=0
"$BIN/pytest" "$@" || status=$?
if [[ $status -eq 5 ]]; then
    echo "run-tests: pytest collected no tests; that is a failure here." >&2
fi
exit "$status"
