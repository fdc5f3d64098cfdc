#!/usr/bin/env bash
# A real single-node OpenStack (Zed, Debian 12's packages, Nova's fake virt driver) with Blazar
# on this machine, for the openstack platform's tests (tests/test_platform_openstack_e2e.py).
# It runs the shared scripts as they stand (../shared/infra/openstack: ~5 min on a fresh
# machine, ~1.3 GB). Quick when the cloud already runs: every daemon alive and Keystone, Nova and
# Placement answering means nothing is done. Then the tests need
#   OS_CLIENT_CONFIG_FILE=/tmp/ci-openstack/clouds.yaml OS_CLOUD=ci-openstack
# (the tests' defaults). EBROKER_OPENSTACK_BLAZAR=0 leaves Blazar out (its test then fails in CI).
set -euo pipefail

SHARED="$(cd "$(dirname "$0")/../../shared/infra/openstack" && pwd)"
BASE=${OS_CI_BASE:-/tmp/ci-openstack}
RUN=$BASE/state/run
CORE="keystone placement glance-api neutron-server nova-api nova-conductor nova-scheduler nova-compute"
BLAZAR="blazar-api blazar-manager"

log() { echo "setup-openstack: $*"; }
alive() { [[ -f "$RUN/$1.pid" ]] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }
all_alive() { local d; for d in "$@"; do alive "$d" || return 1; done; }
answers() { curl -sf -o /dev/null --max-time 5 "$1"; }

running() {
  all_alive $CORE && [[ -s "$BASE/clouds.yaml" ]] \
    && answers http://127.0.0.1:5000/v3 && answers http://127.0.0.1:8774/ \
    && answers http://127.0.0.1:8778/
}

if running; then
  log "the cloud already runs ($BASE)"
else
  bash "$SHARED/setup-openstack.sh" up
fi

if [[ "${EBROKER_OPENSTACK_BLAZAR:-1}" == 1 ]]; then
  if all_alive $BLAZAR && curl -s -o /dev/null --max-time 5 http://127.0.0.1:1234/; then
    log "Blazar already runs"
  else
    # setup-blazar.sh only fetches two wheels with pip (any pip will do)
    PIP=${PIP:-$(command -v pip3 || command -v pip)} bash "$SHARED/setup-blazar.sh" up
  fi
fi
# Neutron's L3 API (routers, floating IPs), which the shared script leaves out: the router
# service plugin, with no L3 agent (nothing is wired: the fake virt driver runs no guest), so
# that floating IPs can be allocated and bound to servers' ports. `up` rewrites neutron.conf,
# so this is checked on every run; neutron-server restarts only when the plugin was missing.
NEUTRON_CONF=$BASE/state/etc/neutron/neutron.conf
if ! grep -q '^service_plugins = router$' "$NEUTRON_CONF"; then
  sed -i 's/^service_plugins =.*/service_plugins = router/' "$NEUTRON_CONF"
  if alive neutron-server; then
    start-stop-daemon --stop --quiet --oknodo --pidfile "$RUN/neutron-server.pid" \
      --remove-pidfile --retry TERM/15/KILL/5 || true
  fi
  state=$BASE/state
  PYTHONPATH=$state/lib/neutron/py start-stop-daemon --start --quiet --oknodo --background \
    --make-pidfile --pidfile "$RUN/neutron-server.pid" --output "$state/log/neutron-server.out" \
    --chdir "$state/lib" --startas /usr/bin/neutron-server -- \
    --config-file "$state/etc/neutron/neutron.conf" --config-file "$state/etc/neutron/ml2_conf.ini"
  for _ in $(seq 60); do answers http://127.0.0.1:9696/ && break; sleep 1; done
  answers http://127.0.0.1:9696/ || { echo "neutron-server did not come back" >&2; exit 1; }
  # the shared README's gotcha 8: a new neutron-server's first port listing fails unless
  # another query comes first (nova lists ports on every server GET)
  auth='{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"admin",'
  auth+='"domain":{"id":"default"},"password":"'"${OS_ADMIN_PASSWORD:-secret}"'"}}},'
  auth+='"scope":{"project":{"name":"admin","domain":{"id":"default"}}}}}'
  tok=$(curl -sf -D - -o /dev/null -H 'Content-Type: application/json' -d "$auth" \
    http://127.0.0.1:5000/v3/auth/tokens | awk 'tolower($1)=="x-subject-token:"{print $2}' | tr -d '\r')
  curl -sf -o /dev/null -H "X-Auth-Token: $tok" http://127.0.0.1:9696/v2.0/networks
  curl -sf -o /dev/null -H "X-Auth-Token: $tok" http://127.0.0.1:9696/v2.0/ports \
    || { echo "neutron: GET /v2.0/ports still failing" >&2; exit 1; }
  log "neutron-server restarted with the router service plugin (floating IPs)"
fi
log "ready: OS_CLIENT_CONFIG_FILE=$BASE/clouds.yaml OS_CLOUD=ci-openstack"
