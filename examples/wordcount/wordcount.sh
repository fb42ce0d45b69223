#!/bin/sh
# dsys sample program: word frequencies of this chunk's share of the input lines.
# Chunk i of n takes lines i, i+n, i+2n, ... of the inputs (read through the worker's FUSE
# mount) and writes "COUNT WORD" lines to $DSYS_OUTPUT_DIR/counts.txt; dsys dev merges them.
set -eu
for f in "$DSYS_INPUT_DIR"/*; do
  cat "$f"
done | awk -v n="$DSYS_CHUNK_COUNT" -v i="$DSYS_CHUNK_INDEX" '
  (NR - 1) % n == i {
    line = tolower($0)
    gsub(/[^a-z]+/, " ", line)
    k = split(line, w, " ")
    for (j = 1; j <= k; j++) if (length(w[j]) > 0) c[w[j]]++
  }
  END { for (x in c) print c[x], x }' >"$DSYS_OUTPUT_DIR/counts.txt"
