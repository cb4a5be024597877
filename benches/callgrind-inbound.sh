#!/usr/bin/env bash
# Instructions per proxied request of `timproxy serve` (inbound), counted by callgrind: the bench
# origin from benches/compare, 2000 warm-up requests of the mix.lua rotation over one keep-alive
# connection, counters zeroed, then 4000 counted requests. Runs the proxy on CPU 0 (with its two
# worker threads). Instruction counts do not drift with the VM's speed.
#   bash benches/callgrind-inbound.sh [path/to/timproxy] [port]     (KEEP=file keeps the profile)
# The count needs only symbols, which the release binary keeps. To read a kept profile by source
# line, build `cargo build --profile profiling` (release plus line tables) and pass
# target/profiling/timproxy.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
compare=$here/compare
bin=$(realpath "${1:-$here/../target/release/timproxy}")
port=${2:-28081} origin_port=$((${2:-28081} - 1))
dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT
mkdir -p "$dir/origin"
user_line=""; [[ $(id -u) == 0 ]] && user_line="user root root;"
sed -e "s|@USER_LINE@|$user_line|" -e "s|@WORKERS@|1|" -e "s|@DIR@|$dir/origin|g" -e "s|@PORT@|$origin_port|" \
  "$compare/conf/origin-inbound.conf.in" >"$dir/origin/nginx.conf"
nginx -p "$dir/origin" -e "$dir/origin/error.log" -c "$dir/origin/nginx.conf" -g 'daemon off;' & pids+=($!)
python3 "$compare/bench_util.py" fedlist "$dir/fedlist.json" 10000 hs1.test hs2.test bench.test
cat >"$dir/tp.yaml" <<YAML
inbound: {listen: 127.0.0.1:$port}
outbound: {listen: 127.0.0.1:0}
admin: {listen: 127.0.0.1:0}
info_api: {enabled: false}
homeserver: {url: "http://127.0.0.1:$origin_port", server_name: hs1.test}
federation: {source: file, list_file: "$dir/fedlist.json", refresh_interval: 24h}
database: {url: "sqlite://$dir/tp.db"}
cleanup: {enabled: false}
YAML
(cd "$dir" && exec taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" \
  --dump-instr=no --compress-strings=no --compress-pos=no \
  "$bin" --log-level warn --config "$dir/tp.yaml" serve >"$dir/tp.log" 2>&1) & vg=$!
pids+=("$vg")
for _ in $(seq 120); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 1; done
python3 "$here/callgrind-client.py" "$port" 2000 >/dev/null
callgrind_control -z "$vg" >/dev/null 2>&1
python3 "$here/callgrind-client.py" "$port" 4000
callgrind_control -d "$vg" >/dev/null 2>&1
sleep 1
dump=$(ls "$dir"/cg.out.* | head -1)
total=$(awk '/^summary:/ {print $2}' "$dump")
echo "instructions per request: $((total / 4000))"
[[ -z ${KEEP:-} ]] || { cp "$dump" "$KEEP"; echo "profile kept in $KEEP"; }
