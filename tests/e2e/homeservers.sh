#!/usr/bin/env bash
# tests/e2e/homeservers.sh — run two (or three) real Synapse homeservers on loopback.
#
# Usage:
#   homeservers.sh prepare [--via-proxy] [--hs3]   CA + certs + homeserver.yaml + e2e.env, starts nothing
#   homeservers.sh start   [--via-proxy] [--hs3]   prepare, wipe databases, start, wait until healthy
#   homeservers.sh stop                            stop every Synapse started from $E2E_DIR (by pidfile)
#   homeservers.sh status                          running / healthy per homeserver
#   homeservers.sh logs [hs1|hs2|hs3] [LINES]      tail the Synapse logs
#   homeservers.sh clean                           stop, then delete $E2E_DIR except the venv
#
# Modes:
#   direct (default)  hs1/hs2 federate directly: each Synapse has a TLS listener on its public
#                     port (client+federation) and a plain internal listener.
#   --via-proxy       hs1/hs2 listen plain HTTP only on their internal port. The CALLER must already
#                     run, per homeserver, an INBOUND proxy (TLS on the public port, cert/key from
#                     e2e.env, forwarding to the internal port) and an OUTBOUND proxy (HTTP CONNECT
#                     on HSn_OUTBOUND_PROXY_PORT) that Synapse uses via HTTPS_PROXY. Synapse trusts
#                     only E2E_PROXY_CA (default: the harness CA) for federation TLS.
#   --hs3             adds hs3 (public port base+2), never behind a proxy and not in the federation list.
#
# Environment: TIMPROXY_E2E_PORT_BASE (default 8448; layout in ports.sh), E2E_DIR (default ./.e2e),
#   E2E_VENV (default $E2E_DIR/venv), E2E_PROXY_CA, E2E_START_TIMEOUT (s, default 90),
#   E2E_HSn_CLIENT_URL (override the client URL written to e2e.env),
#   E2E_HSn_EXTRA_CONFIG (a YAML file appended to hsn's homeserver.yaml, e.g. an OIDC provider),
#   E2E_SYNAPSE_SSL_CERT_FILE (SSL_CERT_FILE of the servers behind the proxy: the trust store Synapse
#   checks its non-federation HTTPS against — identity provider, push gateway).
# All runtime state lives under $E2E_DIR; the result for tests is $E2E_DIR/e2e.env.
set -euo pipefail

E2E_DIR=${E2E_DIR:-./.e2e}
case "$E2E_DIR" in /*) ;; *) E2E_DIR="$PWD/${E2E_DIR#./}";; esac   # absolute; created by prepare
E2E_DIR=${E2E_DIR%/}
E2E_VENV=${E2E_VENV:-$E2E_DIR/venv}
case "$E2E_VENV" in /*) ;; *) E2E_VENV="$PWD/$E2E_VENV";; esac
PY="$E2E_VENV/bin/python"
START_TIMEOUT=${E2E_START_TIMEOUT:-90}
CERTS="$E2E_DIR/certs"
ENV_FILE="$E2E_DIR/e2e.env"
ALL_HS="hs1 hs2 hs3"

say() { printf 'homeservers: %s\n' "$*"; }
die() { printf 'homeservers: error: %s\n' "$*" >&2; exit 1; }

# --- topology: ports from one base (ports.sh); the public port is part of the server name --------
# shellcheck source=tests/e2e/ports.sh
. "$(dirname "${BASH_SOURCE[0]}")/ports.sh"
server_name()   { echo "$1.test:$(public_port "$1")"; }
upper()         { printf '%s' "$1" | tr '[:lower:]' '[:upper:]'; }
behind_proxy()  { [ "$MODE" = via-proxy ] && [ "$1" != hs3 ]; }

# TCP connect test on 127.0.0.1:PORT (bash /dev/tcp; no curl/nc needed)
listening() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

pid_alive() {
  local f=$1 pid
  [ -f "$f" ] || return 1
  pid=$(cat "$f" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null \
    && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'synapse.app.homeserver'
}

parse_flags() {
  MODE=direct; WITH_HS3=0
  for a in "$@"; do
    case $a in
      --via-proxy) MODE=via-proxy;;
      --hs3) WITH_HS3=1;;
      *) die "unknown option: $a";;
    esac
  done
  SERVERS="hs1 hs2"; [ "$WITH_HS3" = 1 ] && SERVERS="hs1 hs2 hs3"
  return 0
}

need_venv() {
  [ -x "$PY" ] && "$PY" -c 'import synapse' 2>/dev/null \
    || die "no Synapse in $E2E_VENV — run setup.sh first (same E2E_DIR/E2E_VENV)"
}

check_hosts() {
  local h addr
  for h in $SERVERS; do
    addr=$(getent ahostsv4 "$h.test" 2>/dev/null | awk 'NR==1{print $1}' || true)
    [ "$addr" = 127.0.0.1 ] || die "$h.test does not resolve to 127.0.0.1 — run setup.sh (as root)"
  done
}

# --- certificates ---------------------------------------------------------------------------------
gen_certs() {
  mkdir -p "$CERTS"
  if [ -f "$CERTS/ca.pem" ] && [ -f "$CERTS/ca.key" ] \
     && openssl x509 -in "$CERTS/ca.pem" -noout -checkend 86400 >/dev/null 2>&1; then
    :
  else
    say "generating test CA (EC P-256) in $CERTS"
    rm -f "$CERTS"/*
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$CERTS/ca.key" 2>/dev/null
    openssl req -x509 -new -key "$CERTS/ca.key" -sha256 -days 3650 \
      -subj "/O=timproxy e2e/CN=timproxy e2e test CA" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -addext "subjectKeyIdentifier=hash" \
      -out "$CERTS/ca.pem"
  fi
  local h
  for h in $ALL_HS; do
    [ -f "$CERTS/$h.test.crt" ] && [ -f "$CERTS/$h.test.key" ] && [ -f "$CERTS/$h.test.pem" ] \
      && openssl verify -CAfile "$CERTS/ca.pem" "$CERTS/$h.test.crt" >/dev/null 2>&1 && continue
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$CERTS/$h.test.key" 2>/dev/null
    openssl req -new -key "$CERTS/$h.test.key" -subj "/CN=$h.test" -out "$CERTS/$h.test.csr"
    cat >"$CERTS/$h.test.ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=DNS:$h.test
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid,issuer
EOF
    openssl x509 -req -in "$CERTS/$h.test.csr" -CA "$CERTS/ca.pem" -CAkey "$CERTS/ca.key" \
      -CAcreateserial -days 825 -sha256 -extfile "$CERTS/$h.test.ext" \
      -out "$CERTS/$h.test.crt" 2>/dev/null
    cat "$CERTS/$h.test.key" "$CERTS/$h.test.crt" >"$CERTS/$h.test.pem"   # key+cert (mitmproxy/haproxy style)
    rm -f "$CERTS/$h.test.csr" "$CERTS/$h.test.ext"
    say "issued $CERTS/$h.test.crt (SAN DNS:$h.test)"
  done
}

# --- homeserver.yaml --------------------------------------------------------------------------------
secret() { # per-homeserver secrets, generated once
  local f="$1/secrets.env"
  if [ ! -f "$f" ]; then
    { echo "REG_SECRET=$(openssl rand -hex 24)"
      echo "MACAROON_SECRET=$(openssl rand -hex 24)"
      echo "FORM_SECRET=$(openssl rand -hex 24)"; } >"$f"
  fi
  # shellcheck disable=SC1090
  . "$f"
}

client_url() {
  local var="E2E_$(upper "$1")_CLIENT_URL"
  if [ -n "${!var:-}" ]; then echo "${!var}"; else echo "https://$1.test:$(public_port "$1")"; fi
}

write_config() {
  local h=$1 d="$E2E_DIR/$1" name pport iport trust tls_block tls_listener
  name=$(server_name "$h"); pport=$(public_port "$h"); iport=$(internal_port "$h")
  mkdir -p "$d"
  secret "$d"
  if [ ! -f "$d/signing.key" ]; then
    "$PY" -c 'import sys; from signedjson.key import generate_signing_key, write_signing_keys
write_signing_keys(open(sys.argv[1], "w"), [generate_signing_key("e2e")])' "$d/signing.key"
  fi
  if behind_proxy "$h"; then
    trust="$PROXY_CA"; tls_block=""; tls_listener=""
  else
    trust="$CERTS/ca.pem"
    tls_block="tls_certificate_path: \"$CERTS/$h.test.crt\"
tls_private_key_path: \"$CERTS/$h.test.key\""
    tls_listener="  - port: $pport
    bind_addresses: ['127.0.0.1']
    type: http
    tls: true
    resources:
      - names: [client, federation]
        compress: false"
  fi
  cat >"$d/log.yaml" <<EOF
version: 1
formatters:
  precise:
    format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s'
filters:
  context:
    (): synapse.logging.context.LoggingContextFilter
    request: ""
handlers:
  file:
    class: logging.FileHandler
    formatter: precise
    filename: $d/homeserver.log
    filters: [context]
    encoding: utf8
loggers:
  synapse.storage.SQL:
    level: WARNING
  synapse.access.http:
    level: INFO
root:
  level: INFO
  handlers: [file]
disable_existing_loggers: false
EOF
  cat >"$d/homeserver.yaml" <<EOF
# generated by tests/e2e/homeservers.sh ($MODE mode) — do not edit, regenerated on every start
server_name: "$name"
public_baseurl: "$(client_url "$h")/"
pid_file: "$d/homeserver.pid"
signing_key_path: "$d/signing.key"
log_config: "$d/log.yaml"
media_store_path: "$d/media_store"
report_stats: false
suppress_key_server_warning: true
trusted_key_servers: []
database:
  name: sqlite3
  args:
    database: "$d/homeserver.db"
listeners:
$tls_listener
  - port: $iport
    bind_addresses: ['127.0.0.1']
    type: http
    tls: false
    x_forwarded: true
    resources:
      - names: [client, federation]
        compress: false
$tls_block
federation_verify_certificates: true
federation_custom_ca_list:
  - "$trust"
ip_range_whitelist: ['127.0.0.0/8', '::1/128']
enable_registration: false
registration_shared_secret: "$REG_SECRET"
macaroon_secret_key: "$MACAROON_SECRET"
form_secret: "$FORM_SECRET"
default_room_version: "10"
enable_authenticated_media: true
url_preview_enabled: false
presence:
  enabled: false
rc_message: {per_second: 1000, burst_count: 1000}
rc_registration: {per_second: 1000, burst_count: 1000}
rc_login:
  address: {per_second: 1000, burst_count: 1000}
  account: {per_second: 1000, burst_count: 1000}
  failed_attempts: {per_second: 1000, burst_count: 1000}
rc_joins:
  local: {per_second: 1000, burst_count: 1000}
  remote: {per_second: 1000, burst_count: 1000}
rc_invites:
  per_room: {per_second: 1000, burst_count: 1000}
  per_user: {per_second: 1000, burst_count: 1000}
  per_issuer: {per_second: 1000, burst_count: 1000}
rc_federation: {window_size: 1000, sleep_limit: 1000, sleep_delay: 1, reject_limit: 1000, concurrent: 100}
EOF
  local extra_var
  extra_var="E2E_$(upper "$h")_EXTRA_CONFIG"
  if [ -n "${!extra_var:-}" ]; then
    [ -f "${!extra_var}" ] || die "$extra_var=${!extra_var} is not a file"
    { echo "# appended from $extra_var"; cat "${!extra_var}"; } >>"$d/homeserver.yaml"
  fi
}

write_env() {
  local h H tmp="$ENV_FILE.tmp" fed_names="" fed_domains=""
  for h in hs1 hs2; do fed_names="$fed_names $(server_name "$h")"; fed_domains="$fed_domains $h.test"; done
  {
    echo "# generated by tests/e2e/homeservers.sh — source it (set -a; . e2e.env) or parse KEY=\"VALUE\" lines"
    echo "E2E_MODE=\"$MODE\""
    echo "E2E_DIR=\"$E2E_DIR\""
    echo "E2E_VENV=\"$E2E_VENV\""
    echo "E2E_PYTHON=\"$PY\""
    echo "E2E_SERVERS=\"$SERVERS\""
    echo "E2E_CA_CERT=\"$CERTS/ca.pem\""
    echo "E2E_CA_KEY=\"$CERTS/ca.key\""
    echo "E2E_PROXY_CA=\"$PROXY_CA\""
    echo "E2E_FEDERATION_SERVER_NAMES=\"${fed_names# }\""
    echo "E2E_FEDERATION_DOMAINS=\"${fed_domains# }\""
    echo "E2E_PORT_BASE=\"$E2E_PORT_BASE\""
    echo "E2E_SPARE_PORT_FIRST=\"$E2E_SPARE_PORT_FIRST\""
    echo "E2E_SPARE_PORT_LAST=\"$E2E_SPARE_PORT_LAST\""
    for h in $SERVERS; do
      H=$(upper "$h")
      echo "${H}_SERVER_NAME=\"$(server_name "$h")\""
      echo "${H}_HOST=\"$h.test\""
      echo "${H}_PUBLIC_PORT=\"$(public_port "$h")\""
      echo "${H}_PUBLIC_URL=\"https://$h.test:$(public_port "$h")\""
      echo "${H}_CLIENT_URL=\"$(client_url "$h")\""
      echo "${H}_INTERNAL_PORT=\"$(internal_port "$h")\""
      echo "${H}_INTERNAL_URL=\"http://127.0.0.1:$(internal_port "$h")\""
      if behind_proxy "$h"; then
        echo "${H}_VIA_PROXY=\"1\""
        echo "${H}_OUTBOUND_PROXY_PORT=\"$(outbound_port "$h")\""
        echo "${H}_OUTBOUND_PROXY_URL=\"http://127.0.0.1:$(outbound_port "$h")\""
        echo "${H}_PROXY_ADMIN_PORT=\"$(admin_port "$h")\""
        echo "${H}_PROXY_INFO_PORT=\"$(info_port "$h")\""
      else
        echo "${H}_VIA_PROXY=\"0\""
      fi
      echo "${H}_TLS_CERT=\"$CERTS/$h.test.crt\""
      echo "${H}_TLS_KEY=\"$CERTS/$h.test.key\""
      echo "${H}_TLS_PEM=\"$CERTS/$h.test.pem\""
      echo "${H}_REGISTRATION_SHARED_SECRET=\"$(. "$E2E_DIR/$h/secrets.env"; echo "$REG_SECRET")\""
      echo "${H}_ADMIN_TOKEN_FILE=\"$E2E_DIR/$h/admin.token\""
      echo "${H}_CONFIG=\"$E2E_DIR/$h/homeserver.yaml\""
      echo "${H}_LOG=\"$E2E_DIR/$h/homeserver.log\""
      echo "${H}_PIDFILE=\"$E2E_DIR/$h/synapse.pid\""
    done
  } >"$tmp"
  mv "$tmp" "$ENV_FILE"
}

cmd_prepare() {
  parse_flags "$@"
  need_venv
  command -v openssl >/dev/null || die "openssl not found"
  mkdir -p "$E2E_DIR"
  PROXY_CA="$CERTS/ca.pem"
  gen_certs
  if [ "$MODE" = via-proxy ] && [ -n "${E2E_PROXY_CA:-}" ]; then
    case "$E2E_PROXY_CA" in /*) PROXY_CA=$E2E_PROXY_CA;; *) PROXY_CA="$PWD/$E2E_PROXY_CA";; esac
    openssl x509 -in "$PROXY_CA" -noout >/dev/null 2>&1 || die "E2E_PROXY_CA=$E2E_PROXY_CA is not a PEM certificate"
  fi
  local h
  for h in $SERVERS; do write_config "$h"; done
  write_env
  say "prepared $MODE mode for: $SERVERS (env: $ENV_FILE)"
}

# --- health -------------------------------------------------------------------------------------------
# probe URL... : exit 0 when every URL answers 200 (verifying TLS against the harness CA)
probe() {
  "$PY" - "$CERTS/ca.pem" "$@" <<'EOF'
import ssl, sys, urllib.request
ctx = ssl.create_default_context(cafile=sys.argv[1])
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx))
for url in sys.argv[2:]:
    try:
        with opener.open(url, timeout=3) as r:
            if r.status != 200:
                sys.exit(1)
    except Exception:
        sys.exit(1)
EOF
}

# admin_token HS : register @e2e-admin (server admin) via the shared-secret API, write its token
admin_token() {
  local h=$1 d="$E2E_DIR/$1"
  (. "$d/secrets.env"; "$PY" - "http://127.0.0.1:$(internal_port "$h")" "$REG_SECRET" "$d/admin.token" <<'EOF'
import hashlib, hmac, json, os, secrets, sys, urllib.request
base, secret, out = sys.argv[1:]
url = base + "/_synapse/admin/v1/register"
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
nonce = json.load(opener.open(url, timeout=10))["nonce"]
user, pw = "e2e-admin", secrets.token_urlsafe(16)
mac = hmac.new(secret.encode(), b"\0".join([nonce.encode(), user.encode(), pw.encode(), b"admin"]), hashlib.sha1)
req = urllib.request.Request(url, method="POST", headers={"Content-Type": "application/json"}, data=json.dumps(
    {"nonce": nonce, "username": user, "password": pw, "admin": True, "mac": mac.hexdigest()}).encode())
token = json.load(opener.open(req, timeout=10))["access_token"]
fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
os.write(fd, token.encode()); os.close(fd)
EOF
  )
}

cmd_start() {
  parse_flags "$@"
  need_venv
  check_hosts
  local h p running=""
  for h in $ALL_HS; do pid_alive "$E2E_DIR/$h/synapse.pid" && running="$running $h"; done
  [ -z "$running" ] || die "already running:$running — run '$0 stop' first"
  cmd_prepare "$@"

  # ports Synapse will bind must be free; in proxy mode the caller's proxies must already listen
  for h in $SERVERS; do
    p=$(internal_port "$h"); ! listening "$p" || die "port $p ($h internal) is already in use"
    if behind_proxy "$h"; then
      listening "$(public_port "$h")" \
        || die "via-proxy: nothing listens on $h inbound port $(public_port "$h") — start the proxies BEFORE Synapse"
      listening "$(outbound_port "$h")" \
        || die "via-proxy: nothing listens on $h outbound proxy port $(outbound_port "$h") — start the proxies BEFORE Synapse (Synapse backs off ~10 min from a dead proxy)"
    else
      p=$(public_port "$h"); ! listening "$p" || die "port $p ($h public) is already in use"
    fi
  done

  local t0; t0=$(date +%s)
  for h in $SERVERS; do
    local d="$E2E_DIR/$h"
    rm -rf "$d/homeserver.db" "$d/homeserver.db-"* "$d/media_store" "$d/homeserver.log" "$d/stdout.log" "$d/admin.token"
    local proxy_env=()
    if behind_proxy "$h"; then
      proxy_env=("HTTPS_PROXY=http://127.0.0.1:$(outbound_port "$h")" "NO_PROXY=127.0.0.1,localhost")
      # Synapse checks non-federation TLS against the system trust store (OpenSSL's default
      # paths, which SSL_CERT_FILE replaces), never against federation_custom_ca_list.
      if [ -n "${E2E_SYNAPSE_SSL_CERT_FILE:-}" ]; then
        proxy_env+=("SSL_CERT_FILE=$E2E_SYNAPSE_SSL_CERT_FILE")
      fi
    fi
    (cd "$d" || exit 1
      nohup env -u HTTPS_PROXY -u https_proxy -u HTTP_PROXY -u http_proxy -u NO_PROXY -u no_proxy \
        -u ALL_PROXY -u all_proxy "${proxy_env[@]}" \
        "$PY" -m synapse.app.homeserver -c "$d/homeserver.yaml" </dev/null >"$d/stdout.log" 2>&1 &
      echo $! >"$d/synapse.pid")
    say "started $h ($(server_name "$h"), pid $(cat "$d/synapse.pid"))${proxy_env:+ with ${proxy_env[0]}}"
  done

  # wait until healthy (bounded)
  local pending="$SERVERS" still urls
  while [ -n "$pending" ]; do
    still=""
    for h in $pending; do
      pid_alive "$E2E_DIR/$h/synapse.pid" || {
        tail -n 30 "$E2E_DIR/$h/stdout.log" "$E2E_DIR/$h/homeserver.log" 2>/dev/null >&2 || true
        cmd_stop >/dev/null 2>&1 || true
        die "$h exited during start-up (see $E2E_DIR/$h/homeserver.log)"; }
      urls="http://127.0.0.1:$(internal_port "$h")/health"
      behind_proxy "$h" || urls="$urls https://$h.test:$(public_port "$h")/health"
      # shellcheck disable=SC2086
      probe $urls || still="$still $h"
    done
    pending=${still# }
    [ -z "$pending" ] && break
    if [ $(( $(date +%s) - t0 )) -ge "$START_TIMEOUT" ]; then
      cmd_stop >/dev/null 2>&1 || true
      die "not healthy after ${START_TIMEOUT}s: $pending (see $E2E_DIR/<hs>/homeserver.log); stopped all"
    fi
    sleep 0.5
  done
  say "healthy after $(( $(date +%s) - t0 ))s: $SERVERS"
  for h in $SERVERS; do
    admin_token "$h" || { cmd_stop >/dev/null 2>&1 || true; die "could not register the admin user on $h"; }
  done
  say "admin tokens (@e2e-admin, server admin): $E2E_DIR/<hs>/admin.token"
  if [ "$MODE" = via-proxy ]; then
    for h in hs1 hs2; do
      probe "$(client_url "$h")/_matrix/client/versions" \
        || say "warning: $(client_url "$h")/_matrix/client/versions does not answer 200 through the inbound proxy"
    done
  fi
  say "env for tests: $ENV_FILE"
}

cmd_stop() {
  local h f pid n stopped=""
  for h in $ALL_HS; do
    f="$E2E_DIR/$h/synapse.pid"
    if pid_alive "$f"; then
      pid=$(cat "$f"); kill -TERM "$pid" 2>/dev/null || true
      for n in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
      stopped="$stopped $h"
    fi
    rm -f "$f"
  done
  say "stopped:${stopped:- nothing was running}"
}

cmd_status() {
  local h f rc=0 st
  for h in $ALL_HS; do
    f="$E2E_DIR/$h/synapse.pid"
    [ -d "$E2E_DIR/$h" ] || continue
    if pid_alive "$f"; then
      if probe "http://127.0.0.1:$(internal_port "$h")/health"; then st=healthy; else st="running, NOT healthy"; rc=1; fi
      say "$h ($(server_name "$h")): pid $(cat "$f"), $st"
    else
      say "$h ($(server_name "$h")): not running"
    fi
  done
  [ -f "$ENV_FILE" ] && say "env: $ENV_FILE ($(sed -n 's/^E2E_MODE="\(.*\)"/\1/p' "$ENV_FILE") mode)"
  return $rc
}

cmd_logs() {
  local which=${1:-} lines=${2:-50} h
  for h in ${which:-$ALL_HS}; do
    [ -f "$E2E_DIR/$h/homeserver.log" ] || continue
    echo "==> $h: $E2E_DIR/$h/homeserver.log <=="
    tail -n "$lines" "$E2E_DIR/$h/homeserver.log"
    if [ -s "$E2E_DIR/$h/stdout.log" ]; then echo "--- $h stdout/stderr ---"; tail -n 20 "$E2E_DIR/$h/stdout.log"; fi
  done
}

cmd_clean() {
  cmd_stop
  local h
  for h in $ALL_HS; do rm -rf "${E2E_DIR:?}/$h"; done
  rm -rf "${E2E_DIR:?}/certs" "$ENV_FILE"
  say "removed homeserver state, certs and e2e.env under $E2E_DIR (venv kept)"
}

sub=${1:-}; [ $# -gt 0 ] && shift
case "$sub" in
  prepare) cmd_prepare "$@";;
  start)   cmd_start "$@";;
  stop)    cmd_stop;;
  status)  cmd_status;;
  logs)    cmd_logs "$@";;
  clean)   cmd_clean;;
  *) sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; exit 2;;
esac
