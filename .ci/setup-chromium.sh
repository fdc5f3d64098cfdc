#!/usr/bin/env bash
# Headless Chromium for the notebook tests (tests/test_notebooks_podman.py): Debian's chromium
# and chromium-driver, installed with apt-get when chromium is missing. Needs root.
# Idempotent: running it again changes nothing.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi
chromium --version
