#!/usr/bin/env bash
# Build the ebroker image (Containerfile) with podman on a machine that reaches no registry.
#  1. The base: a Debian bookworm root filesystem with python3 (debootstrap --variant=minbase),
#     imported as localhost/ebroker-base:<first 16 hex of the sha256 of its recipe: build_base
#     below, the suite and the packages>, so a change to the recipe makes a new base and an
#     unchanged one is reused (the build is skipped when that tag exists). With EBROKER_IMAGE_CACHE (a directory a CI keeps between
#     runs) the base is saved there as ebroker-base-<hash>.tar after a build and loaded from there
#     before one. The bases of other recipes are removed.
#  2. The wheels: every package of the lock file (constraints.txt) and ebroker's own, built on
#     this host (pip wheel), so the image build needs no index either.
#  3. `podman build --build-arg BASE=<that base>` of the Containerfile, in a context made of the
#     repository's files (tracked and untracked, not ignored; EBROKER_IMAGE_REF=<commit>: that
#     commit's) plus the wheels; tagged localhost/ebroker:latest (EBROKER_IMAGE overrides it)
#     and localhost/ebroker:<the package's version>, the charts' default. podman's layer cache
#     makes an unchanged tree a no-op.
# On a normal machine none of this is needed: `podman build --format docker -t ebroker .` (the
# Containerfile's default BASE is docker.io/library/python:3.11-slim; pip reads PyPI).
# Needs root and the apt mirror; run after .ci/setup-podman.sh. Prints the image's name.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
cd "$(dirname "$0")/.."

BASE_NAME=localhost/ebroker-base
IMAGE="${EBROKER_IMAGE:-localhost/ebroker:latest}"
SUITE=bookworm
# python3-venv: the build stage's virtual environment; ca-certificates: https upstreams, OIDC
PACKAGES=python3,python3-venv,ca-certificates

work="$(mktemp -d)"  # the base's root filesystem, then the build context
cleanup() {
  umount -R "$work/rootfs/proc" "$work/rootfs/dev" "$work/rootfs/sys" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

base_kept() {  # the base is there: the bases of other recipes go
  podman images --format '{{.Repository}}:{{.Tag}}' "$BASE_NAME" |
    grep -vxF -e "$BASE" | xargs -r podman rmi >/dev/null 2>&1 || true
}

build_base() {
  if ! command -v debootstrap >/dev/null 2>&1; then
    apt-get update -qq
    apt-get install -y -qq debootstrap >/dev/null
  fi
  # the host's own Debian mirror (deb.debian.org here); EBROKER_DEBIAN_MIRROR overrides it
  local mirror
  mirror="${EBROKER_DEBIAN_MIRROR:-$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}"
  mirror="${mirror:-http://deb.debian.org/debian}"
  local rootfs="$work/rootfs"
  debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$mirror" \
    >"$work/debootstrap.log" 2>&1 || { tail -n 40 "$work/debootstrap.log" >&2; return 1; }
  chroot "$rootfs" python3 -c 'import venv, ensurepip, ssl'
  chroot "$rootfs" apt-get clean
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/log/*.log \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
  tar -C "$rootfs" -c . | podman import --quiet \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$BASE" >/dev/null
  podman run --rm --network none "$BASE" python3 -c 'import venv' >/dev/null
  if [ -n "$CACHED" ]; then
    mkdir -p "$EBROKER_IMAGE_CACHE"
    podman save --quiet --output "$CACHED.partial" "$BASE" && mv "$CACHED.partial" "$CACHED"
  fi
  rm -rf "$rootfs"
}

# the base's recipe: build_base as written, the suite and the packages
RECIPE_SHA="$({ declare -f build_base; echo "$SUITE $PACKAGES"; } | sha256sum | cut -c1-16)"
BASE="$BASE_NAME:$RECIPE_SHA"
CACHED="${EBROKER_IMAGE_CACHE:+$EBROKER_IMAGE_CACHE/ebroker-base-$RECIPE_SHA.tar}"

started=$SECONDS
if ! podman image exists "$BASE"; then
  if ! { [ -n "$CACHED" ] && [ -s "$CACHED" ] &&
    podman load --quiet --input "$CACHED" >/dev/null && podman image exists "$BASE"; }; then
    build_base
  fi
fi
base_kept
echo "base $BASE ready in $((SECONDS - started)) s" >&2

context="$work/context"
mkdir "$context"
if [ -n "${EBROKER_IMAGE_REF:-}" ]; then
  # one commit, e.g. HEAD: what is committed, whatever the working tree holds
  git archive --format=tar "$EBROKER_IMAGE_REF" | tar -x -C "$context"
else
  # the working tree as git sees it (tracked, and untracked files not ignored), without .git
  git ls-files -z --cached --others --exclude-standard |
    tar --null --no-recursion --ignore-failed-read -T - -c 2>/dev/null | tar -x -C "$context"
fi
started=$SECONDS
# pip names each local index it finds no project in: not a problem, not shown.
# SOURCE_DATE_EPOCH makes ebroker's own wheel the same bytes for the same tree, so that
# podman's layer cache holds when nothing changed.
SOURCE_DATE_EPOCH="$(git log -1 --format=%ct 2>/dev/null || echo 315532800)" \
  "${PYTHON:-python3}" -m pip wheel --quiet --disable-pip-version-check -c "$context/constraints.txt" \
  "$context" -w "$context/wheels" 2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
echo "wheels built in $((SECONDS - started)) s" >&2
# podman's COPY cache sees the files' times too: one fixed time for the whole context
find "$context" -exec touch -h -d "@$(git log -1 --format=%ct 2>/dev/null || echo 315532800)" {} +

started=$SECONDS
podman build --quiet --format docker --build-arg BASE="$BASE" -f "$context/Containerfile" \
  -t "$IMAGE" "$context" >/dev/null
# the charts' default tag is the chart's appVersion, the package's version
VERSION="$(awk -F'"' '/^version *=/ {print $2; exit}' "$context/pyproject.toml")"
podman tag "$IMAGE" "${IMAGE%:*}:$VERSION"
echo "image $IMAGE (and ${IMAGE%:*}:$VERSION) built in $((SECONDS - started)) s" >&2
podman run --rm --network none --no-healthcheck "$IMAGE" --version >/dev/null
echo "$IMAGE"
