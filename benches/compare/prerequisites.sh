#!/usr/bin/env bash
# Installs what the comparison benchmarks need, once (idempotent; about a second when done):
#   * Debian packages: nginx-light (origin and nginx peer), squid-openssl (squid ssl-bump peer,
#     with security_file_certgen), wrk and hey (load generators), curl, openssl, python3-venv,
#     util-linux (taskset), valgrind (benches/callgrind-{inbound,outbound}.sh), iproute2 (ss, hey shim)
#   * mitmproxy, pinned in requirements-mitmproxy.txt, into a venv (BENCH_VENV, default
#     .bench/venv in the repository), where benches/compare/timproxy.sh finds it
# apt-get runs only when something is missing and needs root; without root it prints the
# command instead and exits 2.
#   bash benches/compare/prerequisites.sh
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BENCH_VENV=${BENCH_VENV:-$ROOT/.bench/venv}
say() { printf 'prerequisites: %s\n' "$*"; }

# command -> the Debian package that brings it
missing=()
for pair in nginx:nginx-light squid:squid-openssl wrk:wrk hey:hey curl:curl openssl:openssl \
  taskset:util-linux valgrind:valgrind ss:iproute2; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
[[ -x /usr/lib/squid/security_file_certgen ]] || missing+=(squid-openssl)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if ((${#missing[@]})); then
  # shellcheck disable=SC2207 # package names have no spaces
  missing=($(printf '%s\n' "${missing[@]}" | sort -u))
  if [[ $(id -u) != 0 ]]; then
    say "missing: ${missing[*]}; as root run: apt-get install -y ${missing[*]}"
    exit 2
  fi
  say "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
say "ok: $(nginx -v 2>&1), $(squid -v | head -1), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2), hey, $(openssl version)"

# The package brings a service that Debian starts; the benches start their own squid.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet squid 2>/dev/null; then
  say "note: a system squid is running; the benches do not need it (systemctl stop squid)"
fi

stamp=$BENCH_VENV/.bench-stamp
want=$(sha256sum "$HERE/requirements-mitmproxy.txt" | cut -d' ' -f1)
if [[ -f $stamp && $(cat "$stamp") == "$want" && -x $BENCH_VENV/bin/mitmdump ]]; then
  say "ok: mitmproxy in $BENCH_VENV"
else
  [[ -x $BENCH_VENV/bin/python ]] || python3 -m venv "$BENCH_VENV"
  say "installing mitmproxy into $BENCH_VENV (about a minute the first time) ..."
  "$BENCH_VENV/bin/python" -m pip install --quiet --disable-pip-version-check --timeout 60 \
    -r "$HERE/requirements-mitmproxy.txt"
  echo "$want" >"$stamp"
fi
say "ok: $("$BENCH_VENV/bin/mitmdump" --version 2>/dev/null | head -1)"
