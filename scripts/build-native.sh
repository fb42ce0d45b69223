#!/usr/bin/env bash
# Builds the native (C) programs of dsys into build/. Idempotent and fast: a target is
# rebuilt only when one of its sources (or this script) is newer than it.
# Add a program with one `build <output> "<sources>" <gcc args...>` line below.
# Usage: scripts/build-native.sh [name...]  (names given: build only outputs containing one,
# so a test of one component does not depend on the others compiling).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
mkdir -p build
CC="${CC:-gcc}"
CFLAGS=(-std=c11 -O2 -Wall -Wextra -Werror)
ONLY=("$@")

# build <output> "<space-separated sources and headers>" <extra gcc args (first = main .c)...>
build() {
  local out="$1" deps="$2"
  shift 2
  if ((${#ONLY[@]})); then
    local want=0 name
    for name in "${ONLY[@]}"; do [[ "$out" == *"$name"* ]] && want=1; done
    ((want)) || return 0
  fi
  local stale=0 dep
  [[ -e "$out" ]] || stale=1
  for dep in $deps "${BASH_SOURCE[0]}"; do
    [[ -e "$dep" ]] || { echo "build-native: missing source $dep for $out" >&2; return 1; }
    [[ "$dep" -nt "$out" ]] && stale=1
  done
  if ((stale)); then
    echo "build-native: $out" >&2
    # Build to a temp name and rename, so a concurrent reader never sees a half-written binary.
    "$CC" "${CFLAGS[@]}" -o "$out.tmp.$$" "$@"
    mv -f "$out.tmp.$$" "$out"
  fi
}

build build/wire_test_vectors "wire/test_vectors.c wire/dsys_wire.h" -Iwire wire/test_vectors.c
# fuse: the worker's FUSE mount helper, loaded by fuse/mod.ts through Deno FFI.
build build/libdsys_fuse.so "fuse/dsys_fuse.c" fuse/dsys_fuse.c -shared -fPIC $(pkg-config --cflags --libs fuse3)
# dsys-exec: the worker's helper around bubblewrap (cgroup entry, uid drop, exact exit status).
build build/dsys-exec "roles/worker/dsys_exec.c" roles/worker/dsys_exec.c
