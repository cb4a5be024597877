#!/usr/bin/env bash
# Memory of `timproxy serve` (inbound listener, loopback only, every step bounded):
#   1. idle RSS after start-up,
#   2. peak-RSS growth while streaming SIZE_MIB (default 1024) MiB up and the same down,
#   3. RSS with IDLE_CONNS (default 10000) idle keep-alive client connections.
#   bash benches/memory.sh [path/to/timproxy]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=$(realpath "${1:-$here/../target/release/timproxy}")
size_mib=${SIZE_MIB:-1024}
idle_conns=${IDLE_CONNS:-10000}
port=${PORT:-39090} origin_port=${ORIGIN_PORT:-39083}
dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; [[ -n ${KEEP:-} ]] && echo "kept $dir" || rm -rf "$dir"; }
trap cleanup EXIT
want=$((idle_conns + 1024)) hard=$(ulimit -Hn)
[[ $hard != unlimited && $hard -lt $want ]] && { echo "open-file hard limit $hard < $want needed for $idle_conns connections" >&2; exit 1; }
ulimit -n "$want"

echo '{"version":1,"domainList":[{"domain":"hs1.test","isInsurance":false,"telematikID":"x"}]}' >"$dir/fl.json"
cat >"$dir/c.yaml" <<YAML
inbound: {listen: 127.0.0.1:$port, max_connections: $((idle_conns + 100)), header_read_timeout: 300s}
outbound: {listen: 127.0.0.1:0}
admin: {listen: 127.0.0.1:0}
info_api: {enabled: false}
homeserver: {url: "http://127.0.0.1:$origin_port", server_name: hs1.test}
federation: {source: file, list_file: "$dir/fl.json"}
database: {url: "sqlite://$dir/t.db"}
cleanup: {enabled: false}
YAML
python3 "$here/memory-origin.py" "$origin_port" "$size_mib" & pids+=($!)
(cd "$dir" && exec "$bin" --log-level warn --config "$dir/c.yaml" serve 2>"$dir/tp.log") & tp=$!
pids+=("$tp")
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/_matrix/client/versions" 2>/dev/null && break; sleep 0.1; done
kb() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$tp/status"; }
sleep 1
idle=$(kb VmRSS)
echo "idle RSS: ${idle} kB"

# 2. streaming (before the connections, so their peak does not hide its growth)
before=$(kb VmHWM)
head -c "$((size_mib << 20))" /dev/zero | curl -sS -o /dev/null -w "upload ${size_mib} MiB: HTTP %{http_code}\n" -X POST -T - \
  -H 'Authorization: Bearer bench' -H 'Content-Type: application/octet-stream' \
  "http://127.0.0.1:$port/_matrix/media/v3/upload"
curl -sS -o /dev/null -H 'Authorization: Bearer bench' -w "download: HTTP %{http_code}, %{size_download} bytes\n" \
  "http://127.0.0.1:$port/_matrix/client/v1/media/download/hs1.test/abc"
after=$(kb VmHWM)
echo "peak RSS before streaming: ${before} kB, after ${size_mib} MiB up + ${size_mib} MiB down: ${after} kB, growth: $((after - before)) kB"

# 3. idle keep-alive connections, held until the pipe closes.
exec 3> >(python3 "$here/idle-clients.py" "$port" "$idle_conns" >"$dir/idle.out" 2>"$dir/idle.err")
for _ in $(seq 600); do grep -q '^held' "$dir/idle.out" 2>/dev/null && break; sleep 0.1; done
sleep 1
held=$(awk '/^held/ {print $2}' "$dir/idle.out")
with_conns=$(kb VmRSS)
echo "RSS with ${held:-0} idle keep-alive connections: ${with_conns} kB (+$((with_conns - idle)) kB, $(( (with_conns - idle) * 1024 / ${held:-1} )) bytes/connection)"
exec 3>&-

