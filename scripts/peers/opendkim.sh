#!/usr/bin/env bash
# opendkim.sh - OpenDKIM (a real libmilter filter nobody on the team wrote) for interop tests.
#
#   opendkim.sh conf PORT [sign|verify]  write the config, print its path
#   opendkim.sh run PORT [sign|verify]   write the config, then exec 'opendkim -f' on it
#
# sign:   signs mail whose From: is @example.test (domain example.test, selector 'lab', relaxed/
#         simple); every client on 127.0.0.1 counts as internal, so loopback mail is signed.
# verify: verifies only; the public key comes from TestDNSData (no DNS), Authentication-Results
#         is always added, and no host is internal so loopback mail is verified.
# The key pair is made once with opendkim-genkey in $MILTERKIT_LAB_DIR/opendkim-keys (OpenDKIM
# refuses keys below a world-writable directory, so not /tmp). OpenDKIM logs only to syslog
# (off here): check its effect on the delivered message instead.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
CMD="${1:-}"
PORT="${2:?usage: opendkim.sh conf|run PORT [sign|verify]}"
MODE="${3:-sign}"
KEYS="$LAB_DIR/opendkim-keys"

make_keys() {
  mkdir -p "$KEYS"
  chmod 700 "$KEYS"
  if [ ! -s "$KEYS/lab.private" ]; then
    local tmp
    tmp=$(mktemp -d "$KEYS/gen.XXXXXX")
    opendkim-genkey -b 2048 -d example.test -s lab -D "$tmp"
    chmod 600 "$tmp/lab.private"
    mv -f "$tmp/lab.txt" "$KEYS/lab.txt"
    mv -f "$tmp/lab.private" "$KEYS/lab.private"
    rmdir "$tmp"
  fi
  # TestDNSData file: "name TXT-value", the quoted parts of lab.txt joined
  local txt
  txt=$(tr -d '\n' <"$KEYS/lab.txt" | sed -E 's/.*\(\s*(.*)\s*\).*/\1/; s/"\s*"//g; s/"//g; s/\s+/ /g')
  echo "lab._domainkey.example.test $txt" >"$KEYS/testdns.txt"
}

write_conf() {
  mkdir -p "$LAB_DIR/opendkim"
  local conf="$LAB_DIR/opendkim/$PORT-$MODE.conf"
  {
    echo "Socket inet:$PORT@127.0.0.1"
    echo "Syslog no"
    echo "Background no"
    echo "Canonicalization relaxed/simple"
    echo "SubDomains no"
    echo "AuthservID lab.example.test"
    case "$MODE" in
      sign)
        echo "Mode s"
        echo "Domain example.test"
        echo "Selector lab"
        echo "KeyFile $KEYS/lab.private"
        ;;
      verify)
        echo "Mode v"
        echo "InternalHosts csl:192.0.2.1"
        echo "TestDNSData file:$KEYS/testdns.txt"
        echo "AlwaysAddARHeader yes"
        ;;
      *) echo "opendkim.sh: unknown mode $MODE (expected sign or verify)" >&2; exit 2 ;;
    esac
  } >"$conf"
  echo "$conf"
}

case "$CMD" in
  conf) make_keys; write_conf ;;
  run) make_keys; CONF=$(write_conf); exec opendkim -f -x "$CONF" ;;
  *) echo "usage: opendkim.sh conf|run PORT [sign|verify]" >&2; exit 2 ;;
esac
