#!/usr/bin/env bash
# Installs the Debian 12 packages vitserve needs to build and run.
#   scripts/install-deps.sh          build + runtime
#   scripts/install-deps.sh --test   also what the tests use
# Runs apt-get update once, then one apt-get install.  Needs root (or sudo).
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
pkgs=(build-essential cmake pkg-config
      libdnnl-dev libmicrohttpd-dev libjansson-dev libssl-dev zlib1g-dev
      libjpeg62-turbo-dev libpng-dev libwebp-dev libgif-dev libcurl4-openssl-dev)
if [ "${1:-}" = "--test" ]; then
  pkgs+=(libcmocka-dev python3 python3-pil python3-numpy python3-yaml prometheus chromium)
  # Node.js + npm: whatever the machine has (a nodesource nodejs ships its
  # own npm); Debian's only when neither is there.
  command -v node >/dev/null || pkgs+=(nodejs)
  command -v npm >/dev/null || pkgs+=(npm)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "install-deps: all ${#pkgs[@]} packages present"
fi
