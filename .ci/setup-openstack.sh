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
log "ready: OS_CLIENT_CONFIG_FILE=$BASE/clouds.yaml OS_CLOUD=ci-openstack"
