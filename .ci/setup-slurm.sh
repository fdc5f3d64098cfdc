#!/usr/bin/env bash
# A single-node Slurm 22.05 cluster on this machine, for the slurm platform's tests.
# Idempotent: installs what is missing, (re)writes the config, starts the daemons only when they
# do not answer, waits for the node to be idle and runs a check job.
# Liveness is checked with `munge -n` / `scontrol ping`, not pgrep: killed daemons may linger as
# <defunct> here.
set -euo pipefail

BASE=${EBROKER_SLURM_DIR:-/var/lib/ebroker-slurm}
CONF=/etc/slurm/slurm.conf

log() { echo "setup-slurm: $*"; }

# --- packages -----------------------------------------------------------------------------------
missing=()
for pkg in slurmctld slurmd slurm-client munge; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$pkg")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- munge --------------------------------------------------------------------------------------
if [[ ! -s /etc/munge/munge.key ]]; then
  log "creating a munge key"
  mkdir -p /etc/munge
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 400 /etc/munge/munge.key
install -d -o munge -g munge -m 0755 /run/munge
install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
if ! munge -n >/dev/null 2>&1; then
  log "starting munged"
  rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock /run/munge/munged.pid
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 50); do munge -n >/dev/null 2>&1 && break; sleep 0.1; done
  munge -n >/dev/null || { log "munged does not answer"; exit 1; }
fi

# --- slurm.conf ---------------------------------------------------------------------------------
mkdir -p "$BASE"/{state,spool,log,run} /etc/slurm
cpus=$(nproc)
mem_mib=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
# leave headroom for the OS and the daemons: 10 %, at least 512 MiB
headroom=$((mem_mib / 10 > 512 ? mem_mib / 10 : 512))
real_mem=$((mem_mib - headroom))

new_conf=$(mktemp)
cat >"$new_conf" <<EOF
# Written by .ci/setup-slurm.sh (ebroker): a single-node test cluster.
ClusterName=ebroker
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
MinJobAge=600
SchedulerParameters=bf_interval=1
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd.log
SlurmctldPidFile=$BASE/run/slurmctld.pid
SlurmdPidFile=$BASE/run/slurmd.pid
GresTypes=gpu
NodeName=localhost CPUs=$cpus RealMemory=$real_mem Gres=gpu:a100:2 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE DefaultTime=10 State=UP
EOF
# Two A100s (the machine has no GPU): their device files are clones of /dev/null, so that
# slurmd counts them (a GPU GRES without File is reported as none), and jobs get them with
# --gres like real ones: the slurm platform's GPU sessions run here for real
mkdir -p "$BASE/dev"
for i in 0 1; do
  [[ -c "$BASE/dev/gpu$i" ]] || mknod "$BASE/dev/gpu$i" c 1 3
done
new_gres=$(mktemp)
cat >"$new_gres" <<EOF
# Written by .ci/setup-slurm.sh (ebroker): two stand-in GPUs (device files like /dev/null).
NodeName=localhost Name=gpu Type=a100 File=$BASE/dev/gpu[0-1]
EOF
changed=0
if ! cmp -s "$new_gres" /etc/slurm/gres.conf; then
  log "writing /etc/slurm/gres.conf (2 stand-in A100s)"
  install -m 0644 "$new_gres" /etc/slurm/gres.conf
  changed=1
fi
rm -f "$new_gres"
if ! cmp -s "$new_conf" "$CONF"; then
  log "writing $CONF (CPUs=$cpus RealMemory=$real_mem)"
  install -m 0644 "$new_conf" "$CONF"
  changed=1
fi
rm -f "$new_conf"

# --- daemons ------------------------------------------------------------------------------------
ctld_up() { scontrol ping 2>/dev/null | grep -q "is UP"; }

# A daemon is alive when its pid file names a live process of that name; a <defunct> one is not
# (and its stale pid file would make a new daemon refuse to start, so it is removed).
alive() {
  local name=$1 pidfile=$BASE/run/$1.pid pid
  pid=$(cat "$pidfile" 2>/dev/null) || return 1
  if [[ -n "$pid" && "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$name" &&
    "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]]; then
    return 0
  fi
  rm -f "$pidfile"
  return 1
}

# a changed node definition (its GRES) is read only at start: the daemons are restarted (their
# state, jobs and reservations, is kept in StateSaveLocation; running jobs carry on)
if ctld_up && ((changed)); then
  log "restarting the cluster's daemons for the new configuration"
  scontrol shutdown >/dev/null 2>&1 || true
  for _ in $(seq 100); do ! ctld_up && ! alive slurmd && break; sleep 0.1; done
fi
if ! ctld_up; then
  log "starting slurmctld"
  alive slurmctld || true
  slurmctld
  for _ in $(seq 100); do ctld_up && break; sleep 0.1; done
  ctld_up || { log "slurmctld does not answer; see $BASE/log/slurmctld.log"; exit 1; }
fi

# sinfo marks a node whose slurmd does not answer with a trailing '*'
node_state() { sinfo -h -n localhost -o %T 2>/dev/null | head -n1; }

# slurmd answers no ping of its own (the controller notices a dead one only after a while):
# it is started when its pid file names no live slurmd
if ! alive slurmd; then
  log "starting slurmd (node state: $(node_state))"
  slurmd -N localhost || true
fi
for _ in $(seq 100); do
  state=$(node_state)
  [[ "$state" == idle || "$state" == mixed || "$state" == allocated ]] && break
  if [[ "$state" == down* || "$state" == drain* ]]; then
    scontrol update NodeName=localhost State=RESUME >/dev/null 2>&1 || true
  fi
  sleep 0.2
done
state=$(node_state)
case "$state" in
  idle | mixed | allocated) ;;
  *) log "node localhost is '$state', not idle; see $BASE/log/slurmd.log"; exit 1 ;;
esac

# --- check job ----------------------------------------------------------------------------------
out=$(mktemp -d)
if ! timeout 120 sbatch --quiet --wait --time=1 --output="$out/check.out" --chdir="$out" \
  --job-name=setup-slurm-check --wrap 'echo slurm-ok' >/dev/null; then
  log "the check job failed"
  cat "$out/check.out" 2>/dev/null || true
  exit 1
fi
grep -q slurm-ok "$out/check.out" || { log "the check job printed nothing"; exit 1; }
if ! timeout 120 sbatch --quiet --wait --time=1 --gres=gpu:a100:1 --output="$out/gres.out" \
  --chdir="$out" --job-name=setup-slurm-gres --wrap 'echo "gres-ok $CUDA_VISIBLE_DEVICES"' \
  >/dev/null || ! grep -q gres-ok "$out/gres.out"; then
  log "the GPU check job (--gres=gpu:a100:1) failed"
  cat "$out/gres.out" 2>/dev/null || true
  exit 1
fi
rm -rf "$out"
log "ready: $(sinfo -h -o '%P %D %c cpus %m MiB %G %T' | head -n1)"
