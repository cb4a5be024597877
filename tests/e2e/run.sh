#!/usr/bin/env bash
# The real-Synapse end-to-end run: hs1 and hs2 federate only through one timproxy each (inbound
# TLS listener in front of Synapse, outbound listener as Synapse's HTTPS_PROXY), hs3 runs outside
# the federation list. Everything it needs is in this directory (README.md describes it). Prints
# `== flow NAME` and then the flow's checks, ending in `e2e: N passed, M failed`; exits non-zero
# when any flow or the closing checks fail.
#
#   TIMPROXY_BIN            timproxy binary (default target/debug/timproxy)
#   TIMPROXY_E2E_PORT_BASE  first port of the block of 100 this run uses (default 8448; ports.sh)
#   TIMPROXY_E2E_TIMEOUT    bound for the whole run in seconds, Synapse install included (default 900)
#   TIMPROXY_E2E_FLOWS      space-separated flows to run (default: all of FLOWS below)
#   TIMPROXY_E2E_LOG        timproxy's log filter (default debug,timproxy=trace: the secret check
#                           below reads the most verbose logs)
#   E2E_DIR                 state of this run (default .e2e/<port base> in the repository)
#   E2E_VENV                Synapse + matrix-nio (default .e2e/venv, shared by every port base)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${TIMPROXY_BIN:-$ROOT/target/debug/timproxy}
# shellcheck source=tests/e2e/ports.sh
. "$HERE/ports.sh"
export TIMPROXY_E2E_PORT_BASE=$E2E_PORT_BASE
export E2E_DIR=${E2E_DIR:-$ROOT/.e2e/$E2E_PORT_BASE}
export E2E_VENV=${E2E_VENV:-$ROOT/.e2e/venv}
RUN_TIMEOUT=${TIMPROXY_E2E_TIMEOUT:-900}
T0=$(date +%s)
DEADLINE=$((T0 + RUN_TIMEOUT))

# Every flow, in the order it runs: a name and the command that runs it (with e2e.env loaded).
# A flow's output ends with `e2e: N passed, M failed` (tests/e2e.rs reads it).
FLOWS="happy tim-rules blocked-invite refused browser oidc push"
flow_command() {
  case $1 in
    happy | tim-rules | blocked-invite) echo "$E2E_PYTHON $HERE/flow.py $1" ;;
    refused) echo "$E2E_PYTHON $HERE/flow.py refused --from hs3" ;;
    # Headless Chromium, the OIDC provider, the push gateway (browser/services.sh).
    browser | oidc | push) echo "bash $HERE/browser/flow.sh $1" ;;
    *) return 1 ;;
  esac
}

say() { printf 'e2e: %s\n' "$*"; }
die() { printf 'e2e: error: %s\n' "$*" >&2; exit 2; }
# Seconds left until the run's deadline (at least 1, so `timeout` never gets 0 = unbounded).
remaining() { local left=$((DEADLINE - $(date +%s))); [ "$left" -gt 0 ] && echo "$left" || echo 1; }
past_deadline() { [ "$(date +%s)" -ge "$DEADLINE" ]; }

[ -x "$BIN" ] || die "timproxy binary not found at $BIN (set TIMPROXY_BIN)"
SELECTED=${TIMPROXY_E2E_FLOWS:-$FLOWS}
for flow in $SELECTED; do
  case " $FLOWS " in *" $flow "*) ;; *) die "unknown flow '$flow' (known: $FLOWS)" ;; esac
done

PIDS=()
STATUS=1
cleanup() {
  bash "$HERE/homeservers.sh" stop >/dev/null 2>&1 || true
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
      echo "----- synapse $h (last 40 lines) -----"; bash "$HERE/homeservers.sh" logs "$h" 40 2>/dev/null || true
    done
  fi
}
trap cleanup EXIT

say "port base $E2E_PORT_BASE (ports $E2E_PORT_BASE..$((E2E_PORT_BASE + 99))), state $E2E_DIR, bound ${RUN_TIMEOUT}s"
timeout "$(remaining)" bash "$HERE/setup.sh" || die "setup failed or ran past the ${RUN_TIMEOUT}s bound"
bash "$HERE/homeservers.sh" stop >/dev/null 2>&1 || true
bash "$HERE/homeservers.sh" prepare --via-proxy --hs3
set -a; . "$E2E_DIR/e2e.env"; set +a

# timproxy's own ports must be free: a busy one means another run on the same base.
for h in hs1 hs2; do
  for p in "$(public_port "$h")" "$(outbound_port "$h")" "$(admin_port "$h")" "$(info_port "$h")"; do
    if timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$p" 2>/dev/null; then
      die "port $p is already in use (another e2e run on base $E2E_PORT_BASE? set TIMPROXY_E2E_PORT_BASE)"
    fi
  done
done

# The services of the browser, oidc and push flows: the OIDC provider and the push gateway are
# reached by Synapse only through timproxy's outbound.passthrough (names below), so they start
# first; Synapse loads the provider's metadata at start-up. Without node they are skipped (each of
# those flows then says why).
# shellcheck source=tests/e2e/browser/services.sh
. "$HERE/browser/services.sh"
case " $SELECTED " in
  *" browser "* | *" oidc "* | *" push "*) services_prepare ;;
  *) E2E_SERVICES_SKIP="not selected" ;;
esac
export E2E_SERVICES_SKIP

# The federation list in the registration service's format: hs1 and hs2, not hs3.
cat >"$E2E_DIR/federation-list.json" <<JSON
{"version":1,"domainList":[{"domain":"hs1.test","isInsurance":false,"telematikID":"1-e2e-hs1"},{"domain":"hs2.test","isInsurance":false,"telematikID":"1-e2e-hs2"}]}
JSON

start_proxy() {
  local h=$1 H admin info
  H=$(printf '%s' "$h" | tr '[:lower:]' '[:upper:]')
  eval "local server_name=\$${H}_SERVER_NAME public_port=\$${H}_PUBLIC_PORT internal_url=\$${H}_INTERNAL_URL"
  eval "local out_port=\$${H}_OUTBOUND_PROXY_PORT cert=\$${H}_TLS_CERT key=\$${H}_TLS_KEY token_file=\$${H}_ADMIN_TOKEN_FILE"
  admin=$(admin_port "$h"); info=$(info_port "$h")
  rm -f "$E2E_DIR/timproxy-$h.db"*
  cat >"$E2E_DIR/timproxy-$h.yaml" <<YAML
inbound:
  listen: 127.0.0.1:$public_port
  tls: {cert_file: "$cert", key_file: "$key"}
  well_known_server_port: $public_port
  # Synapse's SSO pages (the oidc flow); the pro flavour keeps them closed by default.
  sso_endpoints: true
outbound:
  listen: 127.0.0.1:$out_port
  ca: {cert_file: "$E2E_CA_CERT", key_file: "$E2E_CA_KEY"}
  allow_private_destinations: true
  # The homeserver's non-federation HTTPS (browser/services.sh): tunnelled, never intercepted.
  passthrough: ["$E2E_OIDC_HOST:$E2E_OIDC_PORT", "$E2E_PUSH_HOST:$E2E_PUSH_PORT"]
  resolve: {$E2E_OIDC_HOST: 127.0.0.1, $E2E_PUSH_HOST: 127.0.0.1}
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
    kill -0 "${PIDS[-1]}" 2>/dev/null || { say "timproxy for $h exited; log:"; cat "$E2E_DIR/timproxy-$h.log"; return 1; }
    sleep 0.1
  done
  say "timproxy for $h did not become live within 10s"; return 1
}

start_proxy hs1
start_proxy hs2
[ -n "$E2E_SERVICES_SKIP" ] || services_start
start_bound=$(remaining); [ "$start_bound" -lt "${E2E_START_TIMEOUT:-90}" ] || start_bound=${E2E_START_TIMEOUT:-90}
E2E_START_TIMEOUT=$start_bound bash "$HERE/homeservers.sh" start --via-proxy --hs3
say "setup done after $(($(date +%s) - T0))s"

failed=0
for flow in $SELECTED; do
  echo "== flow $flow"
  if past_deadline; then say "FAIL $flow: not started, the run's ${RUN_TIMEOUT}s bound is spent"; failed=1; continue; fi
  # shellcheck disable=SC2046 # the command is words by design
  if ! timeout "$(remaining)" $(flow_command "$flow"); then failed=1; fi
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
  echo "== metrics $h: $(curl -s --max-time 5 "http://127.0.0.1:$(admin_port "$h")/metrics" 2>/dev/null | grep -c '^timproxy_rejections_total' || true) rejection series"
done
say "run finished after $(($(date +%s) - T0))s (flows: $SELECTED)"
STATUS=$failed
exit "$failed"
