#!/bin/sh
# dsys: one file for every node and the client, made by scripts/package.sh.
#
# This readable shell header is followed by a payload: two gzip'd tar archives, one after the
# other (the pinned Deno runtime; then the bundled dsys.js, its native helpers, the shared
# libraries a minimal Debian lacks, the sample job and a MANIFEST of SHA-256 sums). The first
# run extracts the payload once, under a lock, into a cache directory named by the payload's
# SHA-256, after checking that checksum and then every extracted file against the MANIFEST;
# every later run only execs the cached Deno on the cached bundle.
#
# Cache: $DSYS_CACHE_DIR, else $XDG_CACHE_HOME/dsys, else /var/cache/dsys for root and
# ~/.cache/dsys for anyone else. A cache writable by anyone but its owner is refused: its files
# are run. DSYS_VERIFY=1 re-checks a cached copy against its MANIFEST before running it.
# Needs only sh, coreutils, findutils, tar, gzip and flock: all Essential in Debian.
set -eu
version='@VERSION@'
commit='@COMMIT@'
sha256='@SHA256@'
bytes='@BYTES@'

tmp=
die() {
  echo "dsys launcher: $*" >&2
  if [ -n "$tmp" ]; then rm -rf "$tmp"; fi
  exit 70
}

if [ -n "${DSYS_CACHE_DIR:-}" ]; then
  cache=$DSYS_CACHE_DIR
elif [ -n "${XDG_CACHE_HOME:-}" ]; then
  cache=$XDG_CACHE_HOME/dsys
elif [ "$(id -u)" = 0 ]; then
  cache=/var/cache/dsys
else
  cache=${HOME:?dsys launcher: set HOME or DSYS_CACHE_DIR}/.cache/dsys
fi
dir=$cache/$version-@KEY@

# Refuses a directory that is not ours or that others may write to (they could swap its files).
check_owned() {
  bad=$(find "$@" -maxdepth 0 \( ! -uid "$(id -u)" -o -perm /022 \) -print)
  [ -z "$bad" ] || die "refusing cache directory $bad: not owned by uid $(id -u), or group/world-writable"
}

extract() {
  mkdir -p "$cache"
  check_owned "$cache"
  exec 9>>"$cache/.lock"
  flock 9
  # Another launcher may have finished the same extraction while this one waited.
  if [ -f "$dir/.complete" ]; then
    exec 9>&-
    return 0
  fi
  # Left by an extraction that was interrupted: none can be running, this one holds the lock.
  rm -rf "$cache"/.tmp.*
  tmp=$(mktemp -d "$cache/.tmp.XXXXXX")
  echo "dsys launcher: first run of dsys $version ($commit): extracting to $dir" >&2
  [ -r "$0" ] || die "cannot read myself ($0) to extract the payload"
  got=$(tail -c "$bytes" "$0" | sha256sum | cut -d' ' -f1)
  [ "$got" = "$sha256" ] || die "$0 is damaged or truncated: payload SHA-256 $got, expected $sha256"
  # -i: the payload is two archives back to back; read past the first one's end marker.
  tail -c "$bytes" "$0" | tar -xzi --no-same-owner -C "$tmp" || die "cannot extract into $tmp"
  (cd "$tmp" && sha256sum --check --quiet --strict MANIFEST) || die "extracted files do not match MANIFEST"
  find "$tmp" -type f -exec chmod a-w {} +
  mkdir -m 700 "$tmp/deno-dir"
  chmod 755 "$tmp"
  : >"$tmp/.complete"
  # A copy without .complete (someone deleted the marker) is replaced as a whole.
  if [ -e "$dir" ]; then rm -rf "$dir"; fi
  mv "$tmp" "$dir"
  tmp=
  exec 9>&-
}

[ -f "$dir/.complete" ] || extract
check_owned "$cache" "$dir"
if [ "${DSYS_VERIFY:-}" = 1 ]; then
  (cd "$dir" && sha256sum --check --quiet --strict MANIFEST) || die "$dir does not match its MANIFEST: remove it to extract again"
fi

# The packaged libzmq, FUSE helper and sandbox helper, rather than whatever the host has; the
# bundled libraries find each other through their RUNPATH ($ORIGIN), so no LD_LIBRARY_PATH leaks
# into the programs dsys starts.
export DSYS_ZMQ_LIB="$dir/lib/libzmq.so.5"
export DSYS_FUSE_LIB="$dir/build/libdsys_fuse.so"
export DSYS_EXEC="$dir/build/dsys-exec"
# Deno's own cache (compiled code) beside the runtime; no update check, no package.json or
# deno.json of the working directory, no remote code: these machines reach no registry.
export DENO_DIR="$dir/deno-dir"
export DENO_NO_UPDATE_CHECK=1
export DENO_NO_PACKAGE_JSON=1
exec "$dir/bin/deno" run -A --no-config --no-lock --no-remote "$dir/build/dsys.js" "$@"
