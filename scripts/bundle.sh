#!/usr/bin/env bash
# Bundles dsys into one file, build/dsys.js (esbuild, pinned, from the npm registry into .tools/).
# Run it with `deno run -A build/dsys.js …`; it needs build/libdsys_fuse.so beside it on workers
# (or $DSYS_FUSE_LIB) and examples/ one level up for `dsys dev`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ESBUILD_VERSION="0.28.2"
esbuild="$root/.tools/esbuild/node_modules/.bin/esbuild"
if ! [[ -x "$esbuild" ]] || [[ "$("$esbuild" --version)" != "$ESBUILD_VERSION" ]]; then
  echo "bundle: installing esbuild@$ESBUILD_VERSION from npm into .tools/esbuild/" >&2
  mkdir -p "$root/.tools/esbuild"
  npm install --prefix "$root/.tools/esbuild" --no-save --silent "esbuild@$ESBUILD_VERSION" >&2
fi
# $DSYS_BUNDLE_OUT and extra esbuild flags ("$@"): scripts/package.sh bundles into its own
# staging directory with the build's commit defined.
out="${DSYS_BUNDLE_OUT:-$root/build/dsys.js}"
mkdir -p "$(dirname "$out")"
"$esbuild" "$root/mod.ts" --bundle --format=esm --platform=neutral --target=esnext \
  --external:'node:*' --log-level=warning --outfile="$out" "$@"
echo "bundle: $out ($(wc -c <"$out") bytes)" >&2
