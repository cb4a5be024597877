#!/usr/bin/env bash
# Memory of `timproxy serve` (inbound listener) beside nginx as a reverse proxy
# (benches/compare/conf/nginx-proxy.conf.in, nginx from benches/compare/prerequisites.sh),
# measured the same way: RSS from /proc (nginx: master plus workers), same origin, same clients.
# Loopback only, every step bounded in time.
#   1. idle RSS after start-up,
#   2. timproxy only: peak-RSS growth while streaming SIZE_MIB (default 1024) MiB up and the
#      same down,
#   3. RSS growth with IDLE_CONNS (default 10000) idle keep-alive client connections, each
#      after one request,
#   4. RSS growth with IDLE_CONNS long-poll `/sync?timeout=…` requests held by the origin at
#      once (each also holds a connection to the origin; fewer if the open-file limit is lower).
#   bash benches/memory.sh [path/to/timproxy]
# PEERS="timproxy nginx" (default) picks the proxies, STAGES="idle stream conns longpoll" the
# stages; NGINX_WORKERS (default auto, as in benches/compare/inbound.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=$(realpath "${1:-$here/../target/release/timproxy}")
size_mib=${SIZE_MIB:-1024}
n=${IDLE_CONNS:-10000}
peers=${PEERS:-timproxy nginx}
stages=${STAGES:-idle stream conns longpoll}
nginx_workers=${NGINX_WORKERS:-auto}
port=${PORT:-39090} origin_port=${ORIGIN_PORT:-39083} longpoll_port=${LONGPOLL_PORT:-39084}
# How long the origin holds each long poll: long enough to open them all, shorter than
# nginx's default proxy_read_timeout (60 s) and timproxy's homeserver.request_timeout (120 s).
hold_ms=${HOLD_MS:-45000}
dir=$(mktemp -d)
pids=()
cleanup() {
  exec 3>&- 2>/dev/null || true
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [[ -n ${KEEP:-} ]] && echo "kept $dir" || rm -rf "$dir"
}
trap cleanup EXIT
# A proxy holds one descriptor per idle connection, two per long poll (client and origin side):
# the long polls are as many as the open-file hard limit allows, at most IDLE_CONNS
# (LONGPOLL_CONNS overrides; with the usual hard limit of 20000 that is 9500).
hard=$(ulimit -Hn)
[[ $hard == unlimited ]] && hard=$((4 * n + 2048))
lp_n=${LONGPOLL_CONNS:-$((n < (hard - 1000) / 2 ? n : (hard - 1000) / 2))}
want=$((n + 1024 > 2 * lp_n + 1000 ? n + 1024 : 2 * lp_n + 1000))
((hard >= want)) || { echo "open-file hard limit $hard < $want needed for $n connections" >&2; exit 1; }
ulimit -n "$want"
has() { [[ " $2 " == *" $1 "* ]]; }

echo '{"version":1,"domainList":[{"domain":"hs1.test","isInsurance":false,"telematikID":"x"}]}' >"$dir/fl.json"
python3 "$here/memory-origin.py" "$origin_port" "$size_mib" & pids+=($!)
python3 "$here/longpoll-origin.py" "$longpoll_port" "$lp_n" >>"$dir/longpoll-origin.out" & pids+=($!)

# RSS in kB of a process and its children (nginx's workers).
rss() {
  local total=0 p
  for p in "$1" $(cat /proc/"$1"/task/*/children 2>/dev/null); do
    total=$((total + $(awk '$1 == "VmRSS:" {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)))
  done
  echo "$total"
}
hwm() { awk '$1 == "VmHWM:" {print $2}' "/proc/$1/status"; }
wait_up() { for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/_matrix/client/versions" 2>/dev/null && return; sleep 0.1; done; echo "proxy did not come up" >&2; exit 1; }

start_timproxy() { # ORIGIN_PORT
  cat >"$dir/c.yaml" <<YAML
inbound: {listen: 127.0.0.1:$port, max_connections: $((n + 100)), header_read_timeout: 300s}
outbound: {listen: 127.0.0.1:0}
admin: {listen: 127.0.0.1:0}
info_api: {enabled: false}
homeserver: {url: "http://127.0.0.1:$1", server_name: hs1.test}
federation: {source: file, list_file: "$dir/fl.json"}
database: {url: "sqlite://$dir/t.db"}
cleanup: {enabled: false}
YAML
  (cd "$dir" && exec "$bin" --log-level warn --config "$dir/c.yaml" serve 2>>"$dir/tp.log") &
  proxy=$!
  pids+=("$proxy")
}

start_nginx() { # ORIGIN_PORT
  mkdir -p "$dir/nginx"
  user_line=""; [[ $(id -u) == 0 ]] && user_line="user root root;"
  sed -e "s|@USER_LINE@|$user_line|" -e "s|@WORKERS@|$nginx_workers|" -e "s|@DIR@|$dir/nginx|g" \
    -e "s|@PORT@|$port|" -e "s|@ORIGIN_HOSTPORT@|127.0.0.1:$1|" \
    -e "s|worker_connections [0-9]*;|worker_connections $want;|" \
    "$here/compare/conf/nginx-proxy.conf.in" >"$dir/nginx/nginx.conf"
  nginx -p "$dir/nginx" -e "$dir/nginx/error.log" -c "$dir/nginx/nginx.conf" -g 'daemon off;' &
  proxy=$!
  pids+=("$proxy")
}

stop_proxy() { kill "$proxy" 2>/dev/null || true; wait "$proxy" 2>/dev/null || true; }

# Hold N client connections (idle-clients.py ARGS…) and print the RSS growth they cause.
held_growth() { # COUNT LABEL WAIT_FILE ARGS…
  local count=$1 label=$2 wait_file=$3 before held with
  shift 3
  before=$(rss "$proxy")
  exec 3> >(python3 "$here/idle-clients.py" "$port" "$count" "$@" >"$dir/clients.out" 2>"$dir/clients.err")
  for _ in $(seq 900); do grep -q '^held' "$wait_file" 2>/dev/null && break; sleep 0.1; done
  sleep 1
  held=$(awk '/^held/ {print $2}' "$dir/clients.out")
  with=$(rss "$proxy")
  # Long polls count as held when the origin holds them (the last count it printed).
  [[ $wait_file == "$dir/clients.out" ]] || held=$(awk '{n = $2} END {print n + 0}' "$wait_file")
  echo "$name: RSS with ${held:-0} $label: ${with} kB (+$((with - before)) kB, $(((with - before) * 1024 / ${held:-1})) bytes/connection)"
  exec 3>&-
  for _ in $(seq 100); do pgrep -f "idle-clients.py $port" >/dev/null || break; sleep 0.1; done
}

for name in $peers; do
  if has idle "$stages" || has stream "$stages" || has conns "$stages"; then
    "start_$name" "$origin_port"
    wait_up
    sleep 1
    has idle "$stages" && echo "$name: idle RSS after start: $(rss "$proxy") kB"

    if [[ $name == timproxy ]] && has stream "$stages"; then
      # Before the connections, so their peak does not hide its growth.
      before=$(hwm "$proxy")
      head -c "$((size_mib << 20))" /dev/zero | curl -sS -o /dev/null -w "upload ${size_mib} MiB: HTTP %{http_code}\n" -X POST -T - \
        -H 'Authorization: Bearer bench' -H 'Content-Type: application/octet-stream' \
        "http://127.0.0.1:$port/_matrix/media/v3/upload"
      curl -sS -o /dev/null -H 'Authorization: Bearer bench' -w "download: HTTP %{http_code}, %{size_download} bytes\n" \
        "http://127.0.0.1:$port/_matrix/client/v1/media/download/hs1.test/abc"
      after=$(hwm "$proxy")
      echo "$name: peak RSS before streaming: ${before} kB, after ${size_mib} MiB up + ${size_mib} MiB down: ${after} kB, growth: $((after - before)) kB"
    fi

    has conns "$stages" && held_growth "$n" "idle keep-alive connections" "$dir/clients.out"
    stop_proxy
  fi

  if has longpoll "$stages"; then
    "start_$name" "$longpoll_port"
    wait_up
    sleep 1
    : >"$dir/longpoll-origin.out"
    held_growth "$lp_n" "held long polls (/sync, timeout ${hold_ms} ms)" "$dir/longpoll-origin.out" longpoll "$hold_ms"
    stop_proxy
  fi
done
