#!/usr/bin/env bash
# Runs the comparison benchmarks with timproxy as the candidate, the way BENCHMARKS.md measured
# them (prerequisites: benches/compare/prerequisites.sh; a release build):
#   bash benches/compare/timproxy.sh inbound     timproxy vs nginx as a reverse proxy (wrk, mix.lua)
#   bash benches/compare/timproxy.sh outbound    timproxy vs squid ssl-bump and mitmproxy (hey, cold/warm CONNECT)
#   bash benches/compare/timproxy.sh all         both, inbound first
# Every setting of inbound.sh / outbound.sh passes through (README.md): REPEAT=3 for figures
# worth reporting, DURATION=2s REPEAT=1 to check that everything works.
#   TIMPROXY_BIN  the binary (default target/release/timproxy)
#   BENCH_DIR     state and results (default .bench in the repository, or /tmp/timproxy-bench
#                 when squid's user `proxy` cannot reach the repository)
#   BENCH_VENV    the venv with mitmdump (default .bench/venv; MITMDUMP overrides)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
kind=${1:-}
case $kind in
  inbound | outbound | all) ;;
  *) echo "usage: $0 inbound|outbound|all" >&2; exit 2 ;;
esac

export TIMPROXY_BIN=${TIMPROXY_BIN:-$ROOT/target/release/timproxy}
[[ -x $TIMPROXY_BIN ]] || { echo "timproxy.sh: $TIMPROXY_BIN not found (cargo build --release, or set TIMPROXY_BIN)" >&2; exit 2; }
BENCH_VENV=${BENCH_VENV:-$ROOT/.bench/venv}
if [[ -z ${BENCH_DIR:-} ]]; then
  BENCH_DIR=$ROOT/.bench
  # squid's helpers run as `proxy` and must reach BENCH_DIR (a clone under /root is not reachable).
  if [[ $(id -u) == 0 ]] && id proxy >/dev/null 2>&1 && ! runuser -u proxy -- test -x "$ROOT"; then
    BENCH_DIR=/tmp/timproxy-bench
  fi
fi
mkdir -p "$BENCH_DIR"
chmod 755 "$BENCH_DIR"
export BENCH_DIR
export MITMDUMP=${MITMDUMP:-$BENCH_VENV/bin/mitmdump}
[[ -x $MITMDUMP ]] || echo "timproxy.sh: no mitmdump at $MITMDUMP (run benches/compare/prerequisites.sh); the mitmproxy peer is skipped" >&2
export CANDIDATE_NAME=${CANDIDATE_NAME:-timproxy}

run_inbound() {
  CANDIDATE_CMD="bash $ROOT/benches/candidate-inbound.sh {PORT} {ORIGIN} {FEDLIST} {BENCH_DIR}" \
    bash "$HERE/inbound.sh"
}
run_outbound() {
  # hey puts the port into the SNI, which rustls refuses; the shim fixes that for timproxy only.
  PATH=$ROOT/benches/hey-sni-shim:$PATH \
    CANDIDATE_CMD="bash $ROOT/benches/candidate-outbound.sh {PORT} {CA_CERT} {CA_KEY} {ORIGIN_CA} {FEDLIST} {BENCH_DIR}" \
    bash "$HERE/outbound.sh"
}

case $kind in
  inbound) run_inbound ;;
  outbound) run_outbound ;;
  all) run_inbound; run_outbound ;;
esac
