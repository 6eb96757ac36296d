#!/usr/bin/env bash
# Fuzzes every Fuzz target of the module for a set time each.
#   scripts/fuzz.sh          # 60s per target
#   FUZZTIME=10m scripts/fuzz.sh
# New crashers land in the package's testdata/fuzz/<Target>/; commit them:
# the normal test run replays them from then on.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-60s}
status=0
for pkg in $(go list ./...); do
  for target in $(go test -list '^Fuzz' "$pkg" 2>/dev/null | grep '^Fuzz' || true); do
    echo "== $pkg $target ($fuzztime)"
    if ! go test "$pkg" -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime"; then
      status=1
    fi
  done
done
exit $status
