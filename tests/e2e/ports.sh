# shellcheck shell=bash
# The port layout of one e2e run, sourced by run.sh and homeservers.sh.
#
# Every listener of a run is TIMPROXY_E2E_PORT_BASE plus a fixed offset, inside a block of 100
# ports, so two runs whose bases are at least 100 apart (and whose E2E_DIR differ; run.sh keys the
# state directory on the base) cannot clash on one machine. The default base keeps the harness's
# historical ports (hs1.test:8448 …); it lies below the kernel's ephemeral range (32768+), so a
# test that binds port 0 never takes one of these ports.
#
#   offset  listener
#   +0..+2  public port of hs1, hs2, hs3 (TLS; part of the server name, e.g. hs1.test:8448)
#   +10..12 Synapse's plain internal listener of hs1, hs2, hs3
#   +20,21  timproxy outbound listener (Synapse's HTTPS_PROXY) for hs1, hs2
#   +30,31  timproxy admin listener (health, metrics) for hs1, hs2
#   +40,41  timproxy information API for hs1, hs2
#   +50..99 free for flows that need services of their own (OIDC provider, push gateway, …):
#           E2E_SPARE_PORT_FIRST … E2E_SPARE_PORT_LAST in e2e.env

E2E_PORT_BASE=${TIMPROXY_E2E_PORT_BASE:-8448}
case "$E2E_PORT_BASE" in
  ''|*[!0-9]*) printf 'e2e: error: TIMPROXY_E2E_PORT_BASE=%s is not a port number\n' "$E2E_PORT_BASE" >&2; exit 2;;
esac
if [ "$E2E_PORT_BASE" -lt 1024 ] || [ "$E2E_PORT_BASE" -gt 65435 ]; then
  printf 'e2e: error: TIMPROXY_E2E_PORT_BASE=%s: the block base..base+99 must lie in 1024..65535\n' "$E2E_PORT_BASE" >&2
  exit 2
fi

# e2e_hs_index HS: 0 for hs1, 1 for hs2, 2 for hs3
e2e_hs_index() { case $1 in hs1) echo 0;; hs2) echo 1;; hs3) echo 2;; *) return 1;; esac; }

public_port()   { echo $((E2E_PORT_BASE + $(e2e_hs_index "$1"))); }
internal_port() { echo $((E2E_PORT_BASE + 10 + $(e2e_hs_index "$1"))); }
# hs3 is never behind a proxy, so it has no outbound, admin or information API port.
outbound_port() { case $1 in hs3) echo "";; *) echo $((E2E_PORT_BASE + 20 + $(e2e_hs_index "$1")));; esac; }
admin_port()    { case $1 in hs3) echo "";; *) echo $((E2E_PORT_BASE + 30 + $(e2e_hs_index "$1")));; esac; }
info_port()     { case $1 in hs3) echo "";; *) echo $((E2E_PORT_BASE + 40 + $(e2e_hs_index "$1")));; esac; }
E2E_SPARE_PORT_FIRST=$((E2E_PORT_BASE + 50))
E2E_SPARE_PORT_LAST=$((E2E_PORT_BASE + 99))
