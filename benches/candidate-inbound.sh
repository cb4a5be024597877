#!/usr/bin/env bash
# CANDIDATE_CMD wrapper for benches/compare/inbound.sh (benches/compare/timproxy.sh uses it): runs `timproxy serve` with every policy
# on, in front of the bench origin, with the bench's federation list (10k fillers).
#   CANDIDATE_CMD='bash benches/candidate-inbound.sh {PORT} {ORIGIN} {FEDLIST} {BENCH_DIR}'
set -euo pipefail
port=$1 origin=$2 fedlist=$3 dir=$4
bin=${TIMPROXY_BIN:-$(cd "$(dirname "$0")/.." && pwd)/target/release/timproxy}
mkdir -p "$dir/timproxy"
cat >"$dir/timproxy/timproxy.yaml" <<YAML
inbound:
  listen: 127.0.0.1:$port
outbound:
  listen: 127.0.0.1:0
admin:
  listen: 127.0.0.1:0
info_api:
  enabled: false
homeserver:
  url: "$origin"
  server_name: hs1.test
federation:
  source: file
  list_file: "$fedlist"
database:
  url: "sqlite://$dir/timproxy/timproxy.db"
cleanup:
  enabled: false
YAML
cd "$dir/timproxy"
exec "$bin" --log-level warn --config "$dir/timproxy/timproxy.yaml" serve
