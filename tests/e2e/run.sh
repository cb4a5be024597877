#!/usr/bin/env bash
# Two real Synapse homeservers federating only through timproxy, plus hs3 outside the
# federation. Drives the shared harness (../shared/e2e) and prints each flow's
# `e2e: N passed, M failed` line; exits non-zero when any flow fails.
#
#   TIMPROXY_BIN      timproxy binary (default target/debug/timproxy)
#   TIMPROXY_E2E_HARNESS  harness directory (default ../shared/e2e next to the repository)
#   E2E_DIR           state directory (default .e2e in the repository)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HARNESS=${TIMPROXY_E2E_HARNESS:-$ROOT/../shared/e2e}
BIN=${TIMPROXY_BIN:-$ROOT/target/debug/timproxy}
export E2E_DIR=${E2E_DIR:-$ROOT/.e2e}
[ -f "$HARNESS/homeservers.sh" ] || { echo "e2e: harness not found at $HARNESS (set TIMPROXY_E2E_HARNESS)" >&2; exit 2; }
[ -x "$BIN" ] || { echo "e2e: timproxy binary not found at $BIN (set TIMPROXY_BIN)" >&2; exit 2; }

PIDS=()
STATUS=1
cleanup() {
  bash "$HARNESS/homeservers.sh" stop >/dev/null 2>&1 || true
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  if [ "$STATUS" != 0 ]; then
    for h in hs1 hs2; do
      echo "----- timproxy $h (last 60 lines) -----"; tail -n 60 "$E2E_DIR/timproxy-$h.log" 2>/dev/null || true
    done
    for h in hs1 hs2 hs3; do
      echo "----- synapse $h (last 40 lines) -----"; bash "$HARNESS/homeservers.sh" logs "$h" 40 2>/dev/null || true
    done
  fi
}
trap cleanup EXIT

bash "$HARNESS/setup.sh"
bash "$HARNESS/homeservers.sh" stop >/dev/null 2>&1 || true
bash "$HARNESS/homeservers.sh" prepare --via-proxy --hs3
set -a; . "$E2E_DIR/e2e.env"; set +a

# The federation list in the registration service's format: hs1 and hs2, not hs3.
cat >"$E2E_DIR/federation-list.json" <<JSON
{"version":1,"domainList":[{"domain":"hs1.test","isInsurance":false,"telematikID":"1-e2e-hs1"},{"domain":"hs2.test","isInsurance":false,"telematikID":"1-e2e-hs2"}]}
JSON

start_proxy() {
  local h=$1 H admin info
  H=$(printf '%s' "$h" | tr '[:lower:]' '[:upper:]')
  eval "local server_name=\$${H}_SERVER_NAME public_port=\$${H}_PUBLIC_PORT internal_url=\$${H}_INTERNAL_URL"
  eval "local out_port=\$${H}_OUTBOUND_PROXY_PORT cert=\$${H}_TLS_CERT key=\$${H}_TLS_KEY token_file=\$${H}_ADMIN_TOKEN_FILE"
  case $h in hs1) admin=18233; info=18777;; hs2) admin=28233; info=28777;; esac
  rm -f "$E2E_DIR/timproxy-$h.db"*
  cat >"$E2E_DIR/timproxy-$h.yaml" <<YAML
inbound:
  listen: 127.0.0.1:$public_port
  tls: {cert_file: "$cert", key_file: "$key"}
  well_known_server_port: $public_port
outbound:
  listen: 127.0.0.1:$out_port
  ca: {cert_file: "$E2E_CA_CERT", key_file: "$E2E_CA_KEY"}
  allow_private_destinations: true
admin:
  listen: 127.0.0.1:$admin
info_api:
  listen: 127.0.0.1:$info
homeserver:
  url: "$internal_url"
  server_name: "$server_name"
  admin_token_file: "$token_file"
federation:
  source: file
  list_file: "$E2E_DIR/federation-list.json"
  trusted_ca_files: ["$E2E_CA_CERT"]
database:
  url: "sqlite://$E2E_DIR/timproxy-$h.db"
cleanup:
  enabled: false
YAML
  "$BIN" --log-level "${TIMPROXY_E2E_LOG:-debug,timproxy=trace}" --config "$E2E_DIR/timproxy-$h.yaml" serve >"$E2E_DIR/timproxy-$h.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do
    if "$BIN" check-health --url "http://127.0.0.1:$admin" --timeout 1s >/dev/null 2>&1; then return 0; fi
    kill -0 "${PIDS[-1]}" 2>/dev/null || { echo "e2e: timproxy for $h exited; log:"; cat "$E2E_DIR/timproxy-$h.log"; return 1; }
    sleep 0.1
  done
  echo "e2e: timproxy for $h did not become live"; return 1
}

start_proxy hs1
start_proxy hs2
bash "$HARNESS/homeservers.sh" start --via-proxy --hs3

failed=0
for flow in "happy" "tim-rules" "blocked-invite" "refused --from hs3"; do
  echo "== flow.py $flow"
  # shellcheck disable=SC2086
  if ! "$E2E_PYTHON" "$HARNESS/flow.py" $flow; then failed=1; fi
done

# No access token (Synapse tokens start with `syt_`) or admin token may appear in timproxy's
# logs, even at trace level.
for h in hs1 hs2; do
  H=$(printf '%s' "$h" | tr '[:lower:]' '[:upper:]')
  eval "token_file=\$${H}_ADMIN_TOKEN_FILE"
  leaked=0
  grep -q 'syt_' "$E2E_DIR/timproxy-$h.log" && leaked=1
  [ -s "$token_file" ] && grep -qF "$(cat "$token_file")" "$E2E_DIR/timproxy-$h.log" && leaked=1
  if [ "$leaked" = 1 ]; then echo "secrets: FAIL: a token appears in the timproxy $h log"; failed=1
  else echo "secrets: no token in the timproxy $h log ($(wc -l <"$E2E_DIR/timproxy-$h.log") lines)"; fi
done

# The rejections are visible to operators by rule id.
for h in hs1 hs2; do
  case $h in hs1) admin=18233;; hs2) admin=28233;; esac
  echo "== metrics $h: $(curl -s "http://127.0.0.1:$admin/metrics" 2>/dev/null | grep -c '^timproxy_rejections_total' || true) rejection series"
done
STATUS=$failed
exit "$failed"
