#!/usr/bin/env bash
# Cinder (block storage v3, Zed: Debian 12's 21.3) added to the CI cloud that
# .ci/setup-openstack.sh runs, for the openstack platform's storage tests
# (tests/test_openstack_cinder_cloud.py). Run it after .ci/setup-openstack.sh.
#
# Usage:  setup-cinder.sh [up]   install (if needed), configure, start; quick (~0.3 s) when it
#                                already runs. Running daemons are left alone: stop + up applies
#                                config changes.
#         setup-cinder.sh stop   stop cinder-api, cinder-scheduler and cinder-volume (by pidfile)
#         setup-cinder.sh clean  stop + unmount + drop the database + remove the catalog entry
#                                and $CINDER
#         setup-cinder.sh status the daemons and their RSS/PSS
#
# The backend: this machine's kernel has no device-mapper (no LVM) and no NFS client, so the LVM
# driver (even with `target_helper = fake`) cannot create a volume. Cinder's own NFS driver
# (cinder.volume.drivers.nfs.NfsDriver, sparse files, no target helper) runs instead on a local
# directory: os-brick mounts a share only when its mount point (nfs_mount_point_base/<md5 of the
# share>) is not in /proc/mounts yet, so a bind mount of a local directory there is taken for the
# mounted share. Volumes are sparse files under $CINDER/lib/export. Nova's fake virt driver
# "attaches" whatever connection info Cinder returns.
#
# Nova: nova-api and nova-compute must send a service token (see NOVA_TOKEN_ENV below); its
# [cinder] section needs nothing more (os_region_name only: nova uses the caller's token and
# finds the volumev3 endpoint in the caller's catalog).
#
# Everything lives under $CINDER (default /tmp/ci-openstack/cinder), not in the shared script's
# state dir, so that its `clean` does not orphan these daemons. The cinder catalog entry is the
# mark of "this Cinder belongs to this Keystone": when it is missing (a fresh cloud), the cinder
# database and the volume files are dropped and made again.
set -euo pipefail

BASE=${OS_CI_BASE:-/tmp/ci-openstack}
CINDER=${OS_CINDER_DIR:-$BASE/cinder}
ETC=$CINDER/etc
LOG=$CINDER/log
RUN=$CINDER/run
LIB=$CINDER/lib
HOST=127.0.0.1
PORT=8776
REGION=RegionOne
# the same defaults and knobs as ../shared/infra/openstack/setup-openstack.sh
ADMIN_PASSWORD=${OS_ADMIN_PASSWORD:-secret}
SERVICE_PASSWORD=${OS_SERVICE_PASSWORD:-servicepass}
DB_USER=ciopenstack
DB_PASS=ciopenstack
DB_NAME=${OS_DB_PREFIX:-ciopenstack_}cinder
RABBIT_VHOST=${OS_RABBIT_VHOST-ciopenstack}
RABBIT_URL=${OS_RABBIT_URL:-rabbit://guest:guest@127.0.0.1:5672/$RABBIT_VHOST}
CINDER_HOST=${CINDER_HOST:-ci-cinder}
# the shared script (its `phase` runs its own functions: start_nova, wait_nova) and its pidfiles
SHARED=${EBROKER_OPENSTACK_SETUP:-$(cd "$(dirname "$0")/../../shared/infra/openstack" && pwd)/setup-openstack.sh}
OS_RUN=$BASE/state/run
# Cinder 21.3 (the fix of bug #2004555, OSSA-2023-003) lets only a service delete an attachment
# that is connected to a server: without a service token from nova, every detach and every delete
# of a server with a volume fails with 409 ConflictNovaUsingAttachment and leaves the volume
# in-use. The shared script writes `send_service_user_token = false` into nova.conf, and writes
# nova.conf again on every `up` and `restart-compute`; oslo.config's environment variables come
# before config files, so nova-api and nova-compute run with this one in their environment
# (.ci/run exports it too, so that every restart of them inherits it).
NOVA_TOKEN_ENV=OS_SERVICE_USER__SEND_SERVICE_USER_TOKEN=true
# nfs-common: the NFS driver checks that mount.nfs exists; qemu-utils: it reads volumes with
# qemu-img info. Not cinder-volume: it pulls lvm2, tgt and open-iscsi, which are of no use here.
PACKAGES="python3-cinder cinder-common nfs-common qemu-utils"
DAEMONS="cinder-api cinder-scheduler cinder-volume"
EXPORT=$LIB/export
SHARE=$HOST:$EXPORT
MNT_BASE=$LIB/mnt
MNT=$MNT_BASE/$(printf '%s' "$SHARE" | md5sum | cut -d' ' -f1) # os-brick's mount point

T0=$(date +%s%N)
log() {
  local ms=$((($(date +%s%N) - T0) / 1000000))
  printf '[%4d.%01ds] setup-cinder: %s\n' $((ms / 1000)) $((ms % 1000 / 100)) "$*"
}
quiet() { # logname cmd... : output to $LOG/logname.out, its tail on failure
  local name=$1
  shift
  "$@" >>"$LOG/$name.out" 2>&1 || {
    local rc=$?
    echo "FAILED ($rc): $*" >&2
    tail -25 "$LOG/$name.out" >&2
    return $rc
  }
}
alive() { [[ -f "$RUN/$1.pid" ]] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }
all_alive() {
  local d
  for d in $DAEMONS; do alive "$d" || return 1; done
}
answers() { curl -s -o /dev/null --max-time 5 "$1"; }
token() { # admin token from keystone (plain curl)
  curl -sf -D - -o /dev/null -H 'Content-Type: application/json' \
    -d '{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"admin","domain":{"id":"default"},"password":"'"$ADMIN_PASSWORD"'"}}},"scope":{"project":{"name":"admin","domain":{"id":"default"}}}}}' \
    "http://$HOST:5000/v3/auth/tokens" | awk 'tolower($1)=="x-subject-token:"{print $2}' | tr -d '\r'
}
catalog() { # "yes" when keystone has the cinderv3 service (made by this script), else "no"
  local tok services
  tok=$(token) && [[ -n "$tok" ]] \
    && services=$(curl -sf --max-time 5 -H "X-Auth-Token: $tok" "http://$HOST:5000/v3/services?type=volumev3") \
    || { echo "setup-cinder: cannot read Keystone's catalog" >&2; return 1; }
  if grep '"name": "cinderv3"' <<<"$services" >/dev/null; then echo yes; else echo no; fi
}
in_catalog() { [[ "$(catalog 2>/dev/null)" == yes ]]; }
mounted() { # the bind mount is there and shows $EXPORT
  [[ -d "$MNT" && -d "$EXPORT" ]] && mountpoint -q "$MNT" \
    && [[ "$(stat -c %d:%i "$MNT")" == "$(stat -c %d:%i "$EXPORT")" ]]
}
environ_has() { # pidfile VAR=value : the process runs with VAR=value in its environment
  local pid
  pid=$(cat "$1" 2>/dev/null) && [[ -r /proc/$pid/environ ]] \
    && tr '\0' '\n' <"/proc/$pid/environ" | grep -x "$2" >/dev/null
}
nova_sends_token() {
  environ_has "$OS_RUN/nova-api.pid" "$NOVA_TOKEN_ENV" \
    && environ_has "$OS_RUN/nova-compute.pid" "$NOVA_TOKEN_ENV"
}
running() {
  all_alive && mounted && answers "http://$HOST:$PORT/" && in_catalog && nova_sends_token
}

# ---------------------------------------------------------------- daemons --
start_daemon() { # name cmd args...
  local name=$1
  shift
  start-stop-daemon --start --quiet --oknodo --background \
    --make-pidfile --pidfile "$RUN/$name.pid" \
    --output "$LOG/$name.out" --chdir "$LIB" \
    --startas "$1" -- "${@:2}"
}
stop_daemon() {
  [[ -f "$RUN/$1.pid" ]] || return 0
  start-stop-daemon --stop --quiet --oknodo --pidfile "$RUN/$1.pid" \
    --remove-pidfile --retry TERM/15/KILL/5 || true
}
stop_all() {
  local d
  for d in $DAEMONS; do stop_daemon "$d" & done
  wait
  log "stopped: $DAEMONS"
}

# ---------------------------------------------------------------- install --
install_packages() {
  local missing="" p
  for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep "ok installed" >/dev/null || missing="$missing $p"
  done
  [[ -z "$missing" ]] && return 0
  log "installing:$missing"
  # no init system: postinst scripts must not start daemons (rpcbind, ...)
  if [[ ! -x /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
  fi
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o DPkg::Lock::Timeout=600 \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    $missing >"$CINDER/apt-install.log" 2>&1 || {
    tail -30 "$CINDER/apt-install.log"
    return 1
  }
  log "packages installed"
}

# ----------------------------------------------------------------- config --
write_config() {
  mkdir -p "$ETC" "$LIB/lock" "$LIB/bin" "$EXPORT" "$MNT_BASE"
  cp /etc/cinder/api-paste.ini "$ETC/api-paste.ini"
  echo "$SHARE" >"$ETC/nfs_shares"
  local auth="auth_type = password
auth_url = http://$HOST:5000/v3
project_domain_name = Default
user_domain_name = Default
project_name = service
password = $SERVICE_PASSWORD
region_name = $REGION"
  cat >"$ETC/cinder.conf" <<CONF
[DEFAULT]
transport_url = $RABBIT_URL
host = $CINDER_HOST
my_ip = $HOST
state_path = $LIB
log_dir = $LOG
auth_strategy = keystone
api_paste_config = $ETC/api-paste.ini
osapi_volume_listen = $HOST
osapi_volume_listen_port = $PORT
# one forked API worker (the parent only supervises it)
osapi_volume_workers = 1
enabled_backends = nfs
storage_availability_zone = nova
graceful_shutdown_timeout = 5
# the scheduler waits at most this long for the first capabilities report at start (default 60)
scheduler_driver_init_wait_time = 10
[database]
connection = mysql+pymysql://$DB_USER:$DB_PASS@$HOST/$DB_NAME?charset=utf8
max_pool_size = 5
[keystone_authtoken]
www_authenticate_uri = http://$HOST:5000/v3
username = cinder
service_token_roles_required = true
$auth
[nova]
# cinder -> nova external events (volume extended, ...)
interface = public
username = nova
$auth
[service_user]
# cinder -> nova calls carry a service token as well (as Cinder 21.3 asks of nova)
send_service_user_token = true
username = cinder
$auth
[coordination]
backend_url = file://$LIB/coordination
[oslo_concurrency]
lock_path = $LIB/lock
[oslo_messaging_notifications]
driver = noop
[nfs]
volume_driver = cinder.volume.drivers.nfs.NfsDriver
volume_backend_name = nfs
nfs_shares_config = $ETC/nfs_shares
nfs_mount_point_base = $MNT_BASE
nfs_sparsed_volumes = true
# cinder-volume runs as root: no "secure" (non-root) file operations, no auto-detection
nas_secure_file_operations = false
nas_secure_file_permissions = false
CONF
  # the cinder-api / -scheduler / -volume .debs only add such wrappers (and cinder-volume pulls
  # lvm2, tgt, open-iscsi); named after the daemon so that each logs to <daemon>.log. cinder-api
  # and cinder-volume always fork (oslo's ProcessLauncher: a parent that only supervises one
  # child, ~35 MB PSS each); oslo's ServiceLauncher runs the one API worker or the one backend
  # in the process itself, as Cinder does on Windows.
  local d
  for d in api scheduler volume; do
    cat >"$LIB/bin/cinder-$d" <<PY
#!/usr/bin/python3
import sys

from cinder.cmd import $d as cmd  # noqa: eventlet monkey-patching first
from cinder import service
from oslo_service import service as oslo_service

service.process_launcher = lambda: oslo_service.ServiceLauncher(service.CONF)
sys.exit(cmd.main())
PY
    chmod +x "$LIB/bin/cinder-$d"
  done
}

# -------------------------------------------------------------- database --
setup_database() {
  local h grants=""
  for h in localhost 127.0.0.1; do
    grants="$grants CREATE USER IF NOT EXISTS '$DB_USER'@'$h' IDENTIFIED BY '$DB_PASS';
                    GRANT ALL PRIVILEGES ON $DB_NAME.* TO '$DB_USER'@'$h';"
  done
  mysql -uroot -e "CREATE DATABASE IF NOT EXISTS $DB_NAME; $grants FLUSH PRIVILEGES;"
}
db_sync() {
  quiet cinder-manage cinder-manage --config-file "$ETC/cinder.conf" db sync
  log "cinder db synced ($DB_NAME)"
}

# ---------------------------------------------------------------- catalog --
register() { # user cinder (admin + service in project service), service cinderv3, 3 endpoints
  OS_AUTH_URL="http://$HOST:5000/v3" OS_PASSWORD="$ADMIN_PASSWORD" SERVICE_PASSWORD="$SERVICE_PASSWORD" \
    REGION="$REGION" URL="http://$HOST:$PORT/v3/%(project_id)s" \
    quiet register /usr/bin/python3 - <<'PY'
import os

import openstack

c = openstack.connect(auth_url=os.environ["OS_AUTH_URL"], username="admin",
                      password=os.environ["OS_PASSWORD"], project_name="admin",
                      user_domain_id="default", project_domain_id="default",
                      region_name=os.environ["REGION"], identity_api_version="3")
idn, url = c.identity, os.environ["URL"]
project = idn.find_project("service", ignore_missing=False)
user = idn.find_user("cinder", domain_id="default")
if user is None:
    user = idn.create_user(name="cinder", password=os.environ["SERVICE_PASSWORD"],
                           domain_id="default", default_project_id=project.id)
else:
    idn.update_user(user, password=os.environ["SERVICE_PASSWORD"])
for role in ("admin", "service"):
    idn.assign_project_role_to_user(project, user, idn.find_role(role, ignore_missing=False))
svc = idn.find_service("cinderv3") or idn.create_service(
    name="cinderv3", type="volumev3", description="Cinder (block storage v3)")
have = {e.interface: e for e in idn.endpoints(service_id=svc.id)}
for iface in ("public", "internal", "admin"):
    if iface not in have:
        idn.create_endpoint(service_id=svc.id, interface=iface, url=url,
                            region_id=os.environ["REGION"])
    elif have[iface].url != url:
        idn.update_endpoint(have[iface], url=url)
print("cinderv3 endpoints:", url)
PY
  log "keystone: user cinder, service cinderv3 (volumev3) at http://$HOST:$PORT/v3/%(project_id)s"
}
unregister() {
  OS_AUTH_URL="http://$HOST:5000/v3" OS_PASSWORD="$ADMIN_PASSWORD" /usr/bin/python3 - <<'PY'
import os

import openstack

c = openstack.connect(auth_url=os.environ["OS_AUTH_URL"], username="admin",
                      password=os.environ["OS_PASSWORD"], project_name="admin",
                      user_domain_id="default", project_domain_id="default",
                      identity_api_version="3")
svc = c.identity.find_service("cinderv3")
if svc is not None:
    for e in c.identity.endpoints(service_id=svc.id):
        c.identity.delete_endpoint(e)
    c.identity.delete_service(svc)
user = c.identity.find_user("cinder", domain_id="default")
if user is not None:
    c.identity.delete_user(user)
PY
}

# ----------------------------------------------------------------- backend --
mount_share() { # what os-brick takes for the mounted share (see the top of this file)
  mounted && return 0
  if mountpoint -q "$MNT" 2>/dev/null; then umount -l "$MNT"; fi
  mkdir -p "$MNT" "$EXPORT"
  mount --bind "$EXPORT" "$MNT"
  log "share $SHARE: $EXPORT bind-mounted at $MNT"
}
unmount_share() {
  if [[ -d "$MNT_BASE" ]]; then
    local m
    for m in "$MNT_BASE"/*; do
      if mountpoint -q "$m" 2>/dev/null; then umount -l "$m"; fi
    done
  fi
}

# ------------------------------------------------------------------- start --
start_all() {
  local conf="--config-file $ETC/cinder.conf"
  # the scheduler first: the volume service reports its capabilities at its start
  # shellcheck disable=SC2086
  start_daemon cinder-scheduler "$LIB/bin/cinder-scheduler" $conf
  # shellcheck disable=SC2086
  start_daemon cinder-api "$LIB/bin/cinder-api" $conf
  # shellcheck disable=SC2086
  start_daemon cinder-volume "$LIB/bin/cinder-volume" $conf
}
wait_ready() { # the API answers, and the scheduler knows the nfs pool (a volume can be made)
  local d
  for _ in $(seq 120); do
    for d in $DAEMONS; do
      alive "$d" || {
        echo "$d died, see $LOG/$d.log and $LOG/$d.out:" >&2
        tail -20 "$LOG/$d.log" "$LOG/$d.out" >&2 || true
        return 1
      }
    done
    answers "http://$HOST:$PORT/" && break
    sleep 1
  done
  answers "http://$HOST:$PORT/" || {
    echo "setup-cinder: cinder-api does not answer on $HOST:$PORT after 120 s" >&2
    return 1
  }
  log "cinder-api up on http://$HOST:$PORT"
  OS_AUTH_URL="http://$HOST:5000/v3" OS_PASSWORD="$ADMIN_PASSWORD" quiet wait-pool /usr/bin/python3 - <<'PY'
import os
import time

import openstack

c = openstack.connect(auth_url=os.environ["OS_AUTH_URL"], username="admin",
                      password=os.environ["OS_PASSWORD"], project_name="admin",
                      user_domain_id="default", project_domain_id="default",
                      identity_api_version="3")
for _ in range(120):
    # (Debian's openstacksdk 0.101 has no block_storage.services())
    services = c.block_storage.get("/os-services?binary=cinder-volume").json()["services"]
    pools = c.block_storage.get("/scheduler-stats/get_pools").json()["pools"]
    if any(s["state"] == "up" for s in services) and pools:
        print("pools:", [p["name"] for p in pools])
        break
    time.sleep(1)
else:
    raise SystemExit("cinder-volume did not report a pool in 120 s")
PY
  log "cinder-volume up: $(tail -1 "$LOG/wait-pool.out")"
}

# ------------------------------------------------------------------- nova --
nova_service_token() { # restart nova-api and nova-compute with $NOVA_TOKEN_ENV (see above)
  nova_sends_token && return 0
  local pid sizes=() d
  # the fake host keeps its size (FAKE_VCPUS, ... are in nova-compute's environment)
  if pid=$(cat "$OS_RUN/nova-compute.pid" 2>/dev/null) && [[ -r /proc/$pid/environ ]]; then
    mapfile -t sizes < <(tr '\0' '\n' <"/proc/$pid/environ" | grep '^FAKE_' || true)
  fi
  for d in nova-api nova-compute; do
    start-stop-daemon --stop --quiet --oknodo --pidfile "$OS_RUN/$d.pid" \
      --remove-pidfile --retry TERM/15/KILL/5 &
  done
  wait
  # start_nova starts what is not running (with the shared script's own command lines);
  # nova-conductor and nova-scheduler (Blazar's filter) keep running
  env "$NOVA_TOKEN_ENV" "${sizes[@]}" bash "$SHARED" phase start_nova wait_nova >>"$LOG/nova-restart.out" 2>&1 || {
    tail -20 "$LOG/nova-restart.out" >&2
    return 1
  }
  nova_sends_token || {
    echo "setup-cinder: nova-api/nova-compute did not start with $NOVA_TOKEN_ENV" >&2
    return 1
  }
  log "nova-api and nova-compute restarted with $NOVA_TOKEN_ENV ${sizes[*]}"
}

fresh_cloud() { # Keystone has no cinder: drop what an earlier Cinder left behind
  log "no cinderv3 in Keystone: Cinder starts from an empty database"
  stop_all
  unmount_share
  mysql -uroot -e "DROP DATABASE IF EXISTS $DB_NAME;"
  rm -rf "$EXPORT" "$LIB/coordination"
}

up_all() {
  if running; then
    log "Cinder already runs (http://$HOST:$PORT)"
    return 0
  fi
  answers "http://$HOST:5000/v3" || {
    echo "setup-cinder: Keystone does not answer on $HOST:5000: run .ci/setup-openstack.sh first" >&2
    return 1
  }
  local known
  known=$(catalog)
  [[ "$known" == yes ]] || fresh_cloud
  install_packages
  write_config
  setup_database
  # the keystone registration while the schema is migrated and the daemons start
  register &
  local reg=$!
  db_sync
  mount_share
  start_all
  wait $reg
  nova_service_token
  wait_ready
  log "Cinder is up"
}

clean_all() {
  stop_all
  unmount_share
  if answers "http://$HOST:5000/v3"; then unregister; fi
  mysql -uroot -e "DROP DATABASE IF EXISTS $DB_NAME;"
  rm -rf "$CINDER"
  log "dropped $DB_NAME, the cinderv3 service and user cinder, removed $CINDER"
}

descendants() {
  local c
  for c in $(pgrep -P "$1"); do
    echo "$c"
    descendants "$c"
  done
}
status_all() {
  local d p q rss pss n
  printf '%-16s %8s %6s %9s %9s\n' daemon pid procs RSS_MB PSS_MB
  for d in $DAEMONS; do
    alive "$d" || {
      printf '%-16s %8s\n' "$d" "-"
      continue
    }
    p=$(cat "$RUN/$d.pid")
    rss=0 pss=0 n=0
    for q in $p $(descendants "$p"); do
      n=$((n + 1))
      rss=$((rss + $(awk '/^Rss:/{print $2}' "/proc/$q/smaps_rollup" 2>/dev/null || echo 0)))
      pss=$((pss + $(awk '/^Pss:/{print $2}' "/proc/$q/smaps_rollup" 2>/dev/null || echo 0)))
    done
    printf '%-16s %8s %6s %9d %9d\n' "$d" "$p" "$n" $((rss / 1024)) $((pss / 1024))
  done
}

mkdir -p "$ETC" "$LOG" "$RUN" "$LIB"
case "${1:-up}" in
  up) up_all ;;
  stop) stop_all ;;
  clean) clean_all ;;
  status) status_all ;;
  *)
    echo "usage: $0 [up|stop|clean|status]" >&2
    exit 2
    ;;
esac
