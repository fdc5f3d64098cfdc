#!/usr/bin/env bash
# Build the notebook-server image the local platform's jupyter-notebook sessions run
# (issue 15, point 5). No registry is reachable here, so the image is made from a Debian root
# filesystem (debootstrap, Debian's python3-jupyter-server and python3-notebook) and imported.
#  - The image is tagged localhost/ebroker-jupyter:<first 16 hex of this script's sha256>, so a
#    change to the recipe (this file) makes a new image and an unchanged one is reused: the
#    build is skipped when that tag exists (the cache). localhost/ebroker-jupyter:latest is
#    moved to it, for a site's config to name; the images of other recipes are removed.
#  - With EBROKER_IMAGE_CACHE (a directory a CI keeps between runs), the image is also saved
#    there as ebroker-jupyter-<hash>.tar after a build, and loaded from there before one.
#  - debootstrap leaves python3-zmq unconfigured (it cannot resolve the virtual
#    python3-cffi-backend-api-*); `apt-get install --fix-broken` in the chroot completes it.
#  - Needs root and the apt mirror; run after .ci/setup-podman.sh. Prints the image's name.
# Idempotent: running it again changes nothing.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
NAME=localhost/ebroker-jupyter
RECIPE_SHA="$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)"
IMAGE="$NAME:$RECIPE_SHA"
SUITE=bookworm
PACKAGES=python3-jupyter-server,python3-notebook

CACHED="${EBROKER_IMAGE_CACHE:+$EBROKER_IMAGE_CACHE/ebroker-jupyter-$RECIPE_SHA.tar}"

done_with() {  # the image is there: the stable tag moved to it, other recipes' images gone
  podman tag "$IMAGE" "$NAME:latest"
  podman images --format '{{.Repository}}:{{.Tag}}' "$NAME" |
    grep -vxF -e "$IMAGE" -e "$NAME:latest" | xargs -r podman rmi >/dev/null || true
  echo "$IMAGE"
  exit 0
}

if podman image exists "$IMAGE"; then
  done_with
fi
if [ -n "$CACHED" ] && [ -s "$CACHED" ] && podman load --quiet --input "$CACHED" >/dev/null &&
  podman image exists "$IMAGE"; then
  done_with
fi

if ! command -v debootstrap >/dev/null 2>&1; then
  apt-get update -qq
  apt-get install -y -qq debootstrap >/dev/null
fi

# the host's own Debian mirror (deb.debian.org here); EBROKER_DEBIAN_MIRROR overrides it
MIRROR="${EBROKER_DEBIAN_MIRROR:-$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"

tmp="$(mktemp -d)"
cleanup() {
  # the chroot's /proc and /dev may be mounted by apt's maintainer scripts
  umount -R "$tmp/rootfs/proc" "$tmp/rootfs/dev" "$tmp/rootfs/sys" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
ROOTFS="$tmp/rootfs"

debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOTFS" "$MIRROR" >"$tmp/debootstrap.log" 2>&1 || {
  # debootstrap fails at python3-zmq's configuration (see above): the fix-up below finishes it
  grep -q 'python3-zmq' "$tmp/debootstrap.log" || { tail -n 40 "$tmp/debootstrap.log" >&2; exit 1; }
}
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
# apt-get's --fix-broken install (no package named) completes what debootstrap left, with
# python3-cffi-backend (and libboost-regex1.74.0, which libsource-highlight4v5 lacks then)
chroot "$ROOTFS" apt-get install -y -qq --fix-broken >"$tmp/apt.log" 2>&1 || {
  tail -n 40 "$tmp/debootstrap.log" "$tmp/apt.log" >&2
  exit 1
}
chroot "$ROOTFS" dpkg --configure -a
chroot "$ROOTFS" python3 -c 'import jupyter_server, notebook, zmq'
chroot "$ROOTFS" apt-get clean
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/* "$ROOTFS/etc/resolv.conf"
mkdir -p "$ROOTFS/work" "$ROOTFS/etc/jupyter"
# The servers log a failed request's URL and referrer whole, and the session's token may be in
# them (the connector's URL carries it): the image's request log leaves it out.
request_log() {  # the config file's name, the server's module, its application class
  cat >"$ROOTFS/etc/jupyter/$1" <<PY
# written by ebroker .ci/setup-jupyter.sh: request URLs are logged without their token
import re

import tornado.web
from $2.log import log_request

_TOKEN = re.compile(r"(token=)[^&\s]*", re.IGNORECASE)
_summary = tornado.web.RequestHandler._request_summary


def _scrubbed_summary(handler):  # what tornado's own warnings name a request by
    return _TOKEN.sub(r"\1[token]", _summary(handler))


tornado.web.RequestHandler._request_summary = _scrubbed_summary


def _log_request(handler):
    request = handler.request
    request.uri = _TOKEN.sub(r"\1[token]", request.uri)
    if "Referer" in request.headers:
        request.headers["Referer"] = _TOKEN.sub(r"\1[token]", request.headers["Referer"])
    log_request(handler)


c.$3.tornado_settings = {"log_function": _log_request}
PY
}
request_log jupyter_notebook_config.py notebook NotebookApp
request_log jupyter_server_config.py jupyter_server ServerApp

tar -C "$ROOTFS" -c . | podman import --quiet \
  --change 'WORKDIR /work' \
  - "$IMAGE" >/dev/null
podman run --rm --network none "$IMAGE" python3 -c 'import jupyter_server, notebook' >/dev/null
if [ -n "$CACHED" ]; then
  mkdir -p "$EBROKER_IMAGE_CACHE"
  podman save --quiet --output "$CACHED.partial" "$IMAGE" && mv "$CACHED.partial" "$CACHED"
fi
done_with
