#!/usr/bin/env bash
# libmilter-filter.sh - build and run milterkit's libmilter C test filter (testfilter.c).
#
#   libmilter-filter.sh build          compile if needed; print the binary's path
#   libmilter-filter.sh run PORT [MODE] compile if needed, then exec the filter on
#                                        inet:PORT@127.0.0.1 (MODE full | noop; see testfilter.c)
#
# The binary is named after a hash of the source, so checkouts with different sources never share
# a stale binary: $MILTERKIT_LAB_DIR/build/testfilter-<sha>.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
SRC="$PEERS_DIR/libmilter-filter/testfilter.c"

build() {
  local sum out tmp
  sum=$(sha256sum "$SRC" | cut -c1-16)
  out="$LAB_DIR/build/testfilter-$sum"
  if [ ! -x "$out" ]; then
    mkdir -p "$LAB_DIR/build"
    tmp="$out.tmp.$$"
    cc -O2 -Wall -o "$tmp" "$SRC" -lmilter -lpthread
    mv -f "$tmp" "$out" # atomic: concurrent builds never see a half-written binary
  fi
  echo "$out"
}

case "${1:-}" in
  build) build ;;
  run)
    PORT="${2:?usage: libmilter-filter.sh run PORT [full|noop]}"
    BIN=$(build)
    exec "$BIN" "inet:$PORT@127.0.0.1" "${3:-full}"
    ;;
  *) echo "usage: libmilter-filter.sh build | run PORT [full|noop]" >&2; exit 2 ;;
esac
