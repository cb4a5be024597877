# shellcheck shell=bash
# The services of the browser, oidc and push flows, sourced by run.sh after e2e.env is loaded and
# before timproxy and Synapse start (Synapse loads the OIDC provider's metadata at start-up).
#
#   idp.test:SPARE+0   OpenID Connect provider (npm oidc-provider), HTTPS
#   push.test:SPARE+1  push gateway (records POST /_matrix/push/v1/notify), HTTPS
#   127.0.0.1:SPARE+2  the test page's origin (plain HTTP, another origin than hs1's client URL),
#                      plus /_e2e/pushes: what the push gateway received
#
# Both HTTPS services have certificates from a CA of their own ("services CA"), which is Synapse's
# system trust store (SSL_CERT_FILE) and not timproxy's interception CA: a CONNECT that timproxy
# intercepted instead of tunnelling fails Synapse's certificate check. Neither name resolves for
# Synapse (not in /etc/hosts): it can reach them only through its HTTPS_PROXY, where timproxy
# resolves them (outbound.resolve) and passes them through (outbound.passthrough).
#
# services_prepare   sets E2E_SERVICES_SKIP (a reason) when node or npm is missing, else installs
#                    node_modules (npm ci, pinned by package-lock.json) and makes the certificates
# services_start     starts them in the background (pid appended to PIDS), waits until they listen,
#                    exports E2E_HS1_EXTRA_CONFIG and E2E_SYNAPSE_SSL_CERT_FILE for homeservers.sh

BROWSER_DIR="$HERE/browser"
SERVICES_DIR="$E2E_DIR/services"
export E2E_OIDC_HOST=idp.test E2E_PUSH_HOST=push.test
export E2E_OIDC_PORT=$E2E_SPARE_PORT_FIRST
export E2E_PUSH_PORT=$((E2E_SPARE_PORT_FIRST + 1))
export E2E_PAGE_PORT=$((E2E_SPARE_PORT_FIRST + 2))
export E2E_SERVICES_DIR="$SERVICES_DIR"
# What Synapse's OIDC client presents to the provider (a test secret, not a credential).
export E2E_OIDC_CLIENT_ID=synapse-hs1 E2E_OIDC_CLIENT_SECRET=e2e-oidc-client-secret
E2E_SERVICES_SKIP=""

services_prepare() {
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    E2E_SERVICES_SKIP="node and npm are needed for the browser, oidc and push flows (not found)"
    return 0
  fi
  local major
  major=$(node -p 'process.versions.node.split(".")[0]')
  if [ "$major" -lt 20 ]; then
    E2E_SERVICES_SKIP="node >= 20 is needed for the browser, oidc and push flows (found $(node --version))"
    return 0
  fi
  local stamp="$BROWSER_DIR/node_modules/.e2e-stamp" want
  want=$(sha256sum "$BROWSER_DIR/package-lock.json" | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "installing the browser flows' node modules (npm ci, about 10 s the first time)"
    (cd "$BROWSER_DIR" && timeout "$(remaining)" npm ci --no-audit --no-fund --loglevel=error) \
      || die "npm ci in $BROWSER_DIR failed"
    printf '%s\n' "$want" >"$stamp"
  fi
  services_certs
}

services_certs() {
  mkdir -p "$SERVICES_DIR"
  local ca="$SERVICES_DIR/ca.pem" key="$SERVICES_DIR/ca.key"
  if ! openssl x509 -in "$ca" -noout -checkend 86400 >/dev/null 2>&1; then
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$key" 2>/dev/null
    openssl req -x509 -new -key "$key" -sha256 -days 3650 \
      -subj "/O=timproxy e2e/CN=timproxy e2e services CA" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$ca"
    rm -f "$SERVICES_DIR/services.crt"
  fi
  if ! openssl verify -CAfile "$ca" "$SERVICES_DIR/services.crt" >/dev/null 2>&1; then
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$SERVICES_DIR/services.key" 2>/dev/null
    openssl req -new -key "$SERVICES_DIR/services.key" -subj "/CN=$E2E_OIDC_HOST" \
      -out "$SERVICES_DIR/services.csr"
    printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
      "extendedKeyUsage=serverAuth" "subjectAltName=DNS:$E2E_OIDC_HOST,DNS:$E2E_PUSH_HOST" \
      >"$SERVICES_DIR/services.ext"
    openssl x509 -req -in "$SERVICES_DIR/services.csr" -CA "$ca" -CAkey "$key" -CAcreateserial \
      -days 825 -sha256 -extfile "$SERVICES_DIR/services.ext" -out "$SERVICES_DIR/services.crt" 2>/dev/null
    rm -f "$SERVICES_DIR/services.csr" "$SERVICES_DIR/services.ext"
  fi
}

services_start() {
  rm -f "$SERVICES_DIR/pushes.json"
  node "$BROWSER_DIR/services.mjs" >"$SERVICES_DIR/services.log" 2>&1 &
  PIDS+=($!)
  local port
  for port in "$E2E_OIDC_PORT" "$E2E_PUSH_PORT" "$E2E_PAGE_PORT"; do
    for _ in $(seq 100); do
      timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null && break
      kill -0 "${PIDS[-1]}" 2>/dev/null || { cat "$SERVICES_DIR/services.log"; die "the flows' services exited"; }
      sleep 0.1
    done
  done
  # hs1 logs in through the provider; the page's origin may receive login tokens without
  # Synapse's "continue to your client" confirmation page.
  cat >"$SERVICES_DIR/hs1-oidc.yaml" <<YAML
oidc_providers:
  - idp_id: e2e
    idp_name: "e2e provider"
    issuer: "https://$E2E_OIDC_HOST:$E2E_OIDC_PORT"
    client_id: "$E2E_OIDC_CLIENT_ID"
    client_secret: "$E2E_OIDC_CLIENT_SECRET"
    scopes: ["openid", "profile"]
    user_profile_method: userinfo_endpoint
    user_mapping_provider:
      config:
        localpart_template: "{{ user.sub }}"
        display_name_template: "{{ user.name }}"
sso:
  client_whitelist: ["http://127.0.0.1:$E2E_PAGE_PORT/"]
YAML
  export E2E_HS1_EXTRA_CONFIG="$SERVICES_DIR/hs1-oidc.yaml"
  export E2E_SYNAPSE_SSL_CERT_FILE="$SERVICES_DIR/ca.pem"
  say "flow services: OIDC provider https://$E2E_OIDC_HOST:$E2E_OIDC_PORT, push gateway https://$E2E_PUSH_HOST:$E2E_PUSH_PORT, page http://127.0.0.1:$E2E_PAGE_PORT"
}
