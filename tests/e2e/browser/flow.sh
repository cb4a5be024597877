#!/usr/bin/env bash
# Run one flow of flows.mjs (browser | oidc | push) the way run.sh runs a flow: e2e.env and
# services.sh's variables exported. Prints `e2e: skipped: <why>` (exit 0) when the flows' services
# could not start here, so the reason is in the output rather than a silent pass.
set -euo pipefail
if [ -n "${E2E_SERVICES_SKIP:-}" ]; then
  echo "e2e: skipped: $E2E_SERVICES_SKIP"
  exit 0
fi
# Node's fetch checks hs1's inbound certificate against the harness CA.
NODE_EXTRA_CA_CERTS="$E2E_CA_CERT" exec node "$(dirname "$0")/flows.mjs" "$@"
