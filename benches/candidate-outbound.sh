#!/usr/bin/env bash
# CANDIDATE_CMD wrapper for benches/compare/outbound.sh (benches/compare/timproxy.sh uses it): runs `timproxy serve` as the
# intercepting CONNECT proxy with the bench CA, trusting the origin CA upstream. The bench's
# destinations are on 127.0.0.1, so the SSRF guard is relaxed for this run only.
#   CANDIDATE_CMD='bash benches/candidate-outbound.sh {PORT} {CA_CERT} {CA_KEY} {ORIGIN_CA} {FEDLIST} {BENCH_DIR}'
set -euo pipefail
port=$1 ca_cert=$2 ca_key=$3 origin_ca=$4 fedlist=$5 dir=$6
bin=${TIMPROXY_BIN:-$(cd "$(dirname "$0")/.." && pwd)/target/release/timproxy}
mkdir -p "$dir/timproxy"
cat >"$dir/timproxy/timproxy.yaml" <<YAML
inbound:
  listen: 127.0.0.1:0
outbound:
  listen: 127.0.0.1:$port
  ca: {cert_file: "$ca_cert", key_file: "$ca_key"}
  allow_private_destinations: true
admin:
  listen: 127.0.0.1:0
info_api:
  enabled: false
federation:
  source: file
  list_file: "$fedlist"
  trusted_ca_files: ["$origin_ca"]
database:
  url: "sqlite://$dir/timproxy/timproxy.db"
cleanup:
  enabled: false
YAML
cd "$dir/timproxy"
exec "$bin" --log-level warn --config "$dir/timproxy/timproxy.yaml" serve
