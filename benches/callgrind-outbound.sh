#!/usr/bin/env bash
# Instructions per request of `timproxy serve` (outbound) inside an established interception,
# counted by callgrind: the TLS origin of benches/compare/outbound.sh (nginx, bench.test), one
# CONNECT tunnel with TLS to a minted leaf, 1000 warm-up GET /_matrix/federation/v1/version
# requests with X-Matrix over it (the hey workload of outbound.sh), counters zeroed, then 3000
# counted requests over the same tunnel. Both TLS sides, the hyper server and client, the route check and the
# upstream pool are in the count; the CONNECT and both handshakes are not. Runs the proxy on
# CPU 0. Instruction counts do not drift with the VM's speed.
#   bash benches/callgrind-outbound.sh [path/to/timproxy] [port]     (KEEP=file keeps the profile)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
compare=$here/compare
bin=$(realpath "${1:-$here/../target/release/timproxy}")
port=${2:-28093} origin_port=$((${2:-28093} - 1))
warm=${WARM:-1000} counted=${COUNTED:-3000}
dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT
pki=$dir/pki; mkdir -p "$pki"
mkca() { # NAME CN
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -keyout "$pki/$1.key" -out "$pki/$1.pem" -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}
mkca origin-ca "callgrind origin CA"
mkca proxy-ca "callgrind proxy CA"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=bench.test" \
  -keyout "$pki/origin.key" -out "$pki/origin.csr" 2>/dev/null
printf '%s\n' "subjectAltName=DNS:bench.test" "extendedKeyUsage=serverAuth" "basicConstraints=CA:FALSE" \
  "keyUsage=critical,digitalSignature" >"$pki/origin.ext"
openssl x509 -req -in "$pki/origin.csr" -CA "$pki/origin-ca.pem" -CAkey "$pki/origin-ca.key" \
  -CAcreateserial -days 2 -extfile "$pki/origin.ext" -out "$pki/origin.pem" 2>/dev/null
mkdir -p "$dir/origin"
user_line=""; [[ $(id -u) == 0 ]] && user_line="user root root;"
sed -e "s|@USER_LINE@|$user_line|" -e "s|@WORKERS@|1|" -e "s|@DIR@|$dir/origin|g" -e "s|@PORT@|$origin_port|" \
  -e "s|@CERT@|$pki/origin.pem|" -e "s|@KEY@|$pki/origin.key|" \
  "$compare/conf/origin-outbound.conf.in" >"$dir/origin/nginx.conf"
nginx -p "$dir/origin" -e "$dir/origin/error.log" -c "$dir/origin/nginx.conf" -g 'daemon off;' & pids+=($!)
python3 "$compare/bench_util.py" fedlist "$dir/fedlist.json" 10000 hs1.test bench.test
cat >"$dir/tp.yaml" <<YAML
inbound: {listen: 127.0.0.1:0}
outbound:
  listen: 127.0.0.1:$port
  ca: {cert_file: "$pki/proxy-ca.pem", key_file: "$pki/proxy-ca.key"}
  allow_private_destinations: true
  resolve: {bench.test: 127.0.0.1}
admin: {listen: 127.0.0.1:0}
info_api: {enabled: false}
federation: {source: file, list_file: "$dir/fedlist.json", refresh_interval: 24h, trusted_ca_files: ["$pki/origin-ca.pem"]}
database: {url: "sqlite://$dir/tp.db"}
cleanup: {enabled: false}
YAML
(cd "$dir" && exec taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" \
  --dump-instr=no --compress-strings=no --compress-pos=no \
  "$bin" --log-level warn --config "$dir/tp.yaml" serve >"$dir/tp.log" 2>&1) & vg=$!
pids+=("$vg")
for _ in $(seq 120); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 1; done
# One client, one tunnel: warm-up requests, counters zeroed, then the counted requests.
coproc client { python3 "$here/callgrind-outbound-client.py" "$port" "$pki/proxy-ca.pem" bench.test \
  "$origin_port" "$warm" "$counted"; }
pids+=("$client_PID")
# bash unsets client[] when the coprocess exits: keep copies of its pipes.
exec {from_client}<&"${client[0]}" {to_client}>&"${client[1]}"
read -r line <&"$from_client" || true
[[ ${line:-} == warm ]] || { echo "client failed during warm-up: ${line:-no output}" >&2; exit 1; }
callgrind_control -z "$vg" >/dev/null 2>&1
echo go >&"$to_client"
line=""
read -r line <&"$from_client" || true
echo "client: $line"
[[ $line == *"requests ok" ]] || exit 1
callgrind_control -d "$vg" >/dev/null 2>&1
sleep 1
dump=$(ls "$dir"/cg.out.* | head -1)
total=$(awk '/^summary:/ {print $2}' "$dump")
echo "instructions per request: $((total / counted))"
[[ -z ${KEEP:-} ]] || { cp "$dump" "$KEEP"; echo "profile kept in $KEEP"; }
