#!/usr/bin/env bash
# tests/e2e/setup.sh — one-time (idempotent) preparation for the timproxy end-to-end harness.
#
#   * checks python3 (>= 3.10, with venv) and openssl (>= 3)
#   * creates a virtualenv (E2E_VENV, default $E2E_DIR/venv) with exactly the packages pinned in
#     requirements.txt next to this script (Synapse, matrix-nio and everything they pull in)
#   * adds "127.0.0.1 hs1.test hs2.test hs3.test" to /etc/hosts (needs root)
#
# Environment:
#   E2E_DIR              runtime state directory         (default ./.e2e, relative to the cwd)
#   E2E_VENV             virtualenv path                  (default $E2E_DIR/venv)
#   E2E_SYSTEM_PYTHON    interpreter that creates the venv (default python3)
#   E2E_SKIP_HOSTS=1     do not touch /etc/hosts (then hs1/2/3.test must resolve to 127.0.0.1)
#
# A second run only verifies and prints "ok" lines (about a second). The install is bounded by
# pip's per-connection timeout; run.sh bounds the whole script.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REQUIREMENTS="$HERE/requirements.txt"
E2E_DIR=${E2E_DIR:-./.e2e}
E2E_VENV=${E2E_VENV:-$E2E_DIR/venv}
SYSTEM_PYTHON=${E2E_SYSTEM_PYTHON:-python3}
HOSTS_NAMES="hs1.test hs2.test hs3.test"

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

# --- tools -------------------------------------------------------------------
command -v openssl >/dev/null 2>&1 || die "openssl not found (apt-get install -y openssl)"
openssl_ver=$(openssl version)
case "$openssl_ver" in
  "OpenSSL 1."*) die "OpenSSL >= 3 needed (found: $openssl_ver)";;
esac
say "ok: $openssl_ver"

command -v "$SYSTEM_PYTHON" >/dev/null 2>&1 || die "$SYSTEM_PYTHON not found"
"$SYSTEM_PYTHON" - <<'EOF' || die "Python >= 3.10 needed (matrix-synapse requirement)"
import sys
sys.exit(0 if sys.version_info >= (3, 10) else 1)
EOF
say "ok: $("$SYSTEM_PYTHON" --version 2>&1)"

# --- virtualenv ----------------------------------------------------------------
# The stamp holds the hash of the requirements the venv was built from: a changed pin reinstalls.
mkdir -p "$E2E_DIR"
stamp="$E2E_VENV/.e2e-stamp"
want=$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
   && "$E2E_VENV/bin/python" -c 'import synapse, nio, aiohttp' >/dev/null 2>&1; then
  say "ok: venv $E2E_VENV matches requirements.txt"
else
  if [ ! -x "$E2E_VENV/bin/python" ]; then
    say "creating venv $E2E_VENV"
    "$SYSTEM_PYTHON" -m venv "$E2E_VENV" \
      || die "python venv failed (Debian: apt-get install -y python3-venv)"
  fi
  say "installing requirements.txt (Synapse and matrix-nio; about a minute, 275 MB) ..."
  t0=$(date +%s)
  "$E2E_VENV/bin/python" -m pip install --quiet --disable-pip-version-check --timeout 60 \
    -r "$REQUIREMENTS" || die "pip install failed"
  "$E2E_VENV/bin/python" -c 'import synapse, nio, aiohttp' \
    || die "installed packages do not import"
  printf '%s\n' "$want" > "$stamp"
  say "installed in $(( $(date +%s) - t0 ))s"
fi

# --- /etc/hosts ----------------------------------------------------------------
missing=""
for h in $HOSTS_NAMES; do
  addr=$(getent ahostsv4 "$h" 2>/dev/null | awk 'NR==1{print $1}' || true)
  if [ "$addr" != "127.0.0.1" ]; then missing="$missing $h"; fi
done
if [ -z "$missing" ]; then
  say "ok: $HOSTS_NAMES resolve to 127.0.0.1"
elif [ "${E2E_SKIP_HOSTS:-0}" = "1" ]; then
  die "E2E_SKIP_HOSTS=1 but these names do not resolve to 127.0.0.1:$missing"
elif [ -w /etc/hosts ]; then
  printf '127.0.0.1 %s  # timproxy e2e\n' "$HOSTS_NAMES" >> /etc/hosts
  say "added '127.0.0.1 $HOSTS_NAMES' to /etc/hosts"
else
  die "cannot write /etc/hosts; as root add: 127.0.0.1 $HOSTS_NAMES"
fi

say "done (venv: $E2E_VENV)"
