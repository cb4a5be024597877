#!/usr/bin/env bash
# Peak-RSS growth of `timproxy serve` while streaming a 256 MiB media upload and a 256 MiB
# download through the inbound listener (loopback only; bounded by the transfer size).
#   bash benches/streaming-rss.sh [path/to/timproxy]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=$(realpath "${1:-$here/../target/release/timproxy}")
dir=$(mktemp -d)
trap 'kill $tp $up 2>/dev/null || true; rm -rf "$dir"' EXIT
echo '{"version":1,"domainList":[{"domain":"hs1.test","isInsurance":false,"telematikID":"x"}]}' >"$dir/fl.json"
cat >"$dir/c.yaml" <<YAML
inbound: {listen: 127.0.0.1:39090}
outbound: {listen: 127.0.0.1:0}
admin: {listen: 127.0.0.1:0}
info_api: {enabled: false}
homeserver: {url: "http://127.0.0.1:39083", server_name: hs1.test}
federation: {source: file, list_file: "$dir/fl.json"}
database: {url: "sqlite://$dir/t.db"}
cleanup: {enabled: false}
YAML
python3 "$here/streaming-origin.py" 39083 & up=$!
(cd "$dir" && exec "$bin" --log-level warn --config "$dir/c.yaml" serve 2>"$dir/tp.log") & tp=$!
for _ in $(seq 50); do curl -sf -o /dev/null http://127.0.0.1:39090/_matrix/client/versions 2>/dev/null && break; sleep 0.1; done
hwm() { awk '/VmHWM/ {print $2}' "/proc/$tp/status"; }
before=$(hwm)
head -c 268435456 /dev/zero | curl -sS -o /dev/null -w 'upload: HTTP %{http_code}\n' -X POST -T - -H 'Authorization: Bearer bench' -H 'Content-Type: application/octet-stream' \
  http://127.0.0.1:39090/_matrix/media/v3/upload
curl -sS -o /dev/null -H 'Authorization: Bearer bench' -w 'download: HTTP %{http_code}, %{size_download} bytes\n' \
  http://127.0.0.1:39090/_matrix/client/v1/media/download/hs1.test/abc
after=$(hwm)
echo "peak RSS before: ${before} kB, after 256 MiB up + 256 MiB down: ${after} kB, growth: $((after - before)) kB"
