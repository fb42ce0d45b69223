#!/usr/bin/env bash
# Installs what dsys needs on a Debian machine: the system libraries (libzmq, libfuse3),
# bubblewrap (the worker's chunk sandbox), a C compiler, and the pinned Deno from the npm
# registry into .tools/.
# Idempotent and fast when everything is present.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DENO_VERSION="2.9.6"
pkgs=(libzmq5 libzmq3-dev libfuse3-dev fuse3 bubblewrap pkg-config gcc make libc6-dev patchelf nftables iproute2
  prometheus chromium)
# patchelf: scripts/package.sh (the single file); nftables, iproute2: tests/multihost_test.ts;
# prometheus (and its promtool): tests/metrics_test.ts scrapes a cluster with it; chromium:
# tests/dashboard_test.ts drives it headless.

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO=sudo; else
      echo "bootstrap: missing Debian packages: ${missing[*]}" >&2
      echo "bootstrap: install them as root: apt-get update && apt-get install -y ${missing[*]}" >&2
      exit 1
    fi
  else SUDO=""; fi
  echo "bootstrap: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >&2
fi

deno="$root/.tools/node_modules/.bin/deno"
if ! [[ -x "$deno" ]] || [[ "$("$deno" --version 2>/dev/null | head -1)" != "deno $DENO_VERSION "* ]]; then
  echo "bootstrap: installing deno@$DENO_VERSION from npm into .tools/" >&2
  mkdir -p "$root/.tools"
  (cd "$root/.tools" && [[ -f package.json ]] || echo '{"private":true}' >"$root/.tools/package.json")
  npm install --prefix "$root/.tools" --no-save --silent "deno@$DENO_VERSION" >&2
fi
"$deno" --version | head -1 | grep -q "deno $DENO_VERSION" || { echo "bootstrap: deno $DENO_VERSION did not install" >&2; exit 1; }

# Native helpers (FUSE bridge, wire C test vectors).
if [[ -f "$root/scripts/build-native.sh" ]]; then bash "$root/scripts/build-native.sh" >&2; fi
