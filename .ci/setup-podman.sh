#!/usr/bin/env bash
# Make rootful podman usable on this machine kind (Debian 12, no registry reachable):
#  - install podman, runc and busybox-static with apt-get when podman is missing;
#  - write /etc/containers/containers.conf so plain `podman` uses runc + cgroupfs
#    (the default crun fails here with rlimit and hybrid-cgroup errors);
#  - build the image localhost/busybox from the busybox-static .deb when it is missing;
#  - check that a container runs.
# Idempotent: running it again changes nothing.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

if ! command -v podman >/dev/null 2>&1 || ! command -v runc >/dev/null 2>&1; then
  apt-get update -qq
  apt-get install -y -qq podman runc busybox-static >/dev/null
fi

CONF=/etc/containers/containers.conf
MARK="# written by ebroker .ci/setup-podman.sh"
if ! grep -qF "$MARK" "$CONF" 2>/dev/null; then
  mkdir -p /etc/containers
  if [ -s "$CONF" ]; then
    cp "$CONF" "$CONF.ebroker-backup"
  fi
  cat >"$CONF" <<CONF
$MARK
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
CONF
fi

if ! podman image exists localhost/busybox; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  (
    cd "$tmp"
    apt-get download busybox-static >/dev/null 2>&1 || {
      apt-get update -qq
      apt-get download busybox-static >/dev/null
    }
    mkdir rootfs
    dpkg -x busybox-static_*.deb rootfs
    tar -C rootfs -c . | podman import --quiet - localhost/busybox >/dev/null
  )
fi

podman run --rm localhost/busybox /bin/busybox echo ok
