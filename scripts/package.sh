#!/usr/bin/env bash
# Builds build/dsys: one executable file that is the whole of dsys on a machine with nothing
# else installed (docs/operations.md, "The single file"). A shell header (packaging/launcher.sh)
# followed by a payload of two gzip'd tar archives: the pinned Deno runtime (cached between
# builds, as it rarely changes and compressing it is most of the work), then the bundle with the
# build's commit, the native helpers, the shared libraries libzmq and the FUSE helper load, the
# sample job and a MANIFEST. Not `deno compile`: that downloads a runtime from the internet.
# Usage: scripts/package.sh [OUT]   (default build/dsys)
set -euo pipefail
trap 'echo "package: failed (exit $?) at line $LINENO: $BASH_COMMAND" >&2' ERR
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$(realpath -m "${1:-$root/build/dsys}")"
bash "$root/scripts/bootstrap.sh"
work="$root/build/.package"
mkdir -p "$work" "$(dirname "$out")"
# One build at a time: they share the cached Deno archive.
exec 9>>"$work/lock"
flock 9
stage="$(mktemp -d "$work/stage.XXXXXX")"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/build" "$stage/lib" "$stage/bin"

version="$(sed -n 's/^export const VERSION = "\(.*\)";$/\1/p' "$root/lib/version.ts")"
[[ -n "$version" ]] || { echo "package: no VERSION in lib/version.ts" >&2; exit 1; }
commit="$(git -C "$root" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
if [[ "$commit" != unknown && -n "$(git -C "$root" status --porcelain --untracked-files=no)" ]]; then
  commit+="+dirty"
fi

# The bundle, with the commit for `dsys --version`.
DSYS_BUNDLE_OUT="$stage/build/dsys.js" bash "$root/scripts/bundle.sh" \
  --define:globalThis.DSYS_COMMIT="\"$commit\""

# Native helpers a node runs (bootstrap built them; wire_test_vectors is for tests only).
cp "$root/build/libdsys_fuse.so" "$root/build/dsys-exec" "$stage/build/"

# Shared libraries: libzmq and everything it and the FUSE helper need, except glibc's own
# (any glibc system has them, and they must match its loader) and libgcc_s (Deno itself needs it).
# Each is named by its soname and finds the others through RUNPATH=$ORIGIN, so nothing leaks
# into other programs' environment the way LD_LIBRARY_PATH would.
ldconfig="$(command -v ldconfig || echo /sbin/ldconfig)"
# (awk reads to the end: an early exit would kill ldconfig with SIGPIPE, failing the pipeline.)
libzmq="$("$ldconfig" -p | awk '$1 == "libzmq.so.5" && /x86-64/ && !found { print $NF; found = 1 }')"
[[ -n "$libzmq" ]] || { echo "package: libzmq.so.5 not found (install libzmq5)" >&2; exit 1; }
glibc='^(linux-vdso|ld-linux|libc|libm|libdl|libpthread|librt|libresolv|libutil|libgcc_s)[.-]'
copy_lib() { # copy_lib SONAME PATH
  [[ -e "$stage/lib/$1" ]] && return 0
  cp -L "$2" "$stage/lib/$1"
  chmod 644 "$stage/lib/$1"
  patchelf --set-rpath '$ORIGIN' "$stage/lib/$1"
}
copy_lib libzmq.so.5 "$libzmq"
while read -r name _ path _; do
  [[ "$name" =~ $glibc || "$path" != /* ]] && continue
  copy_lib "$name" "$path"
done < <(ldd "$libzmq" "$root/build/libdsys_fuse.so" | grep '=> /')
patchelf --set-rpath '$ORIGIN/../lib' "$stage/build/libdsys_fuse.so"

# The sample job, so that `dsys dev` works from the file alone.
mkdir -p "$stage/examples"
cp -r "$root/examples/wordcount" "$stage/examples/"

# The Deno archive, cached by the binary's identity (the npm install replaces it when pinned anew).
deno="$(realpath "$root/.tools/node_modules/.bin/deno")"
key="$(stat -c '%i-%s-%Y' "$deno")"
deno_tgz="$work/deno-$key.tar.gz"
if ! [[ -f "$deno_tgz" && -f "$deno_tgz.sha256" ]]; then
  echo "package: compressing the Deno runtime (once per Deno binary)" >&2
  rm -f "$work"/deno-*.tar.gz "$work"/deno-*.tar.gz.sha256
  d="$(mktemp -d "$work/deno.XXXXXX")"
  mkdir "$d/bin"
  cp "$deno" "$d/bin/deno"
  (cd "$d" && sha256sum bin/deno) >"$deno_tgz.sha256.tmp"
  tar -C "$d" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -cf - bin \
    | gzip -n -6 >"$deno_tgz.tmp"
  rm -rf "$d"
  mv "$deno_tgz.tmp" "$deno_tgz"
  mv "$deno_tgz.sha256.tmp" "$deno_tgz.sha256"
fi

(cd "$stage" && { cat "$deno_tgz.sha256"; find build lib examples -type f | LC_ALL=C sort | xargs sha256sum; }) \
  >"$stage/MANIFEST"
rmdir "$stage/bin"
payload="$stage.payload"
trap 'rm -rf "$stage" "$payload"' EXIT
{
  cat "$deno_tgz"
  tar -C "$stage" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -cf - \
    MANIFEST build lib examples | gzip -n -6
} >"$payload"
sha256="$(sha256sum "$payload" | cut -d' ' -f1)"
bytes="$(stat -c %s "$payload")"
sed -e "s/@VERSION@/$version/" -e "s/@COMMIT@/$commit/" -e "s/@SHA256@/$sha256/" \
  -e "s/@BYTES@/$bytes/" -e "s/@KEY@/${sha256:0:16}/" "$root/packaging/launcher.sh" >"$out.tmp.$$"
cat "$payload" >>"$out.tmp.$$"
chmod 755 "$out.tmp.$$"
mv -f "$out.tmp.$$" "$out"
echo "package: $out ($(stat -c %s "$out") bytes, dsys $version, commit $commit, payload ${sha256:0:16})" >&2
