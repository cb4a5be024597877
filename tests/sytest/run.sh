#!/usr/bin/env bash
# SyTest behind timproxy, compared with Synapse alone: exits 1 on a test that passes on plain
# Synapse and not behind timproxy unless expected-failures.txt names the TIM rule refusing it.
#
#   tests/sytest/run.sh [full|subset|small]      (default full; CI runs full)
#
# Needs the SyTest kit (../shared/sytest: Synapse, SyTest and the -I TimProxy plugin, set up by
# its run.sh); without it this prints one line and exits 0, so a fresh clone still passes.
# The plain side is the stored baseline plain-passes.txt (made by `compare.py --baseline` from
# a plain run of the same kit); PLAIN=1 runs Synapse alone as well and compares with that run.
#
# Environment: SYTEST_KIT (default ../shared/sytest), SYTEST_DIR (state; default ./.sytest),
# TIMPROXY_BIN (default target/debug/timproxy, which `cargo test` has built), SYTEST_LOCK (a
# file to hold with flock while SyTest runs, for machines shared by several runs),
# TIMEOUT_FACTOR (SyTest's timeouts multiplied; default 3).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
KIT=${SYTEST_KIT:-$ROOT/../shared/sytest}
SET=${1:-full}
case $SET in full | subset | small) ;; *) echo "usage: $0 [full|subset|small]" >&2; exit 2 ;; esac

if [ ! -f "$KIT/run.sh" ]; then
  echo "sytest: skipped: no SyTest kit at $KIT"
  exit 0
fi
export SYTEST_DIR=${SYTEST_DIR:-$ROOT/.sytest}
export TIMPROXY_BIN=${TIMPROXY_BIN:-$ROOT/target/debug/timproxy}
[ -x "$TIMPROXY_BIN" ] || (cd "$ROOT" && cargo build --bin timproxy)

# The deployment SyTest needs beyond the plugin's defaults: Synapse's SSO pages (SyTest logs in
# with CAS), which an operator with SSO switches on with inbound.sso_endpoints (off for flavour
# pro). The plugin starts timproxy with an empty environment and turns YAML booleans into
# integers, so the same list goes in as inbound.extra_endpoints.
sso=$(sed 's/#.*//' "$ROOT/src/inbound/sso_endpoints.txt" | awk 'NF == 2 { printf "%s\"%s %s\"", n++ ? ", " : "", $1, $2 }')
config=(--timproxy-config "inbound.extra_endpoints=[$sso]")

# SyTest gives each test 10 s (60 s for its setup). CI shares 2 cores with builds, where a debug
# timproxy plus two Synapses can take longer without anything being wrong; SyTest multiplies
# every timeout by TIMEOUT_FACTOR.
export TIMEOUT_FACTOR=${TIMEOUT_FACTOR:-3}

locked() { if [ -n "${SYTEST_LOCK:-}" ]; then flock "$SYTEST_LOCK" "$@"; else "$@"; fi; }
partial=(); [ "$SET" = full ] || partial=(--partial)
plain=()
cd "$ROOT"
if [ "${PLAIN:-0}" = 1 ]; then
  locked bash "$KIT/run.sh" plain "ci-$SET-plain" "@$SET"
  plain=(--plain "$SYTEST_DIR/results/ci-$SET-plain.tap")
fi
started=$SECONDS
locked bash "$KIT/run.sh" timproxy "ci-$SET" "${config[@]}" "@$SET"
echo "sytest: $SET behind timproxy ran $((SECONDS - started)) s"
python3 "$ROOT/tests/sytest/compare.py" "${plain[@]}" "${partial[@]}" "$SYTEST_DIR/results/ci-$SET.tap"
