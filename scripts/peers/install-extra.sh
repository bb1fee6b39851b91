#!/usr/bin/env bash
# install-extra.sh - the peers of the interoperability matrix that scripts/peers/install.sh does
# not cover: m4 (to build sendmail.cf) and Sendmail 8.17 itself. Idempotent; prints nothing when
# everything is there already (unless --versions).
#
# Sendmail conflicts with Postfix as a Debian package (both provide mail-transport-agent), so it
# is never installed: sendmail-bin, sendmail-base and sendmail-cf are fetched with
# 'apt-get download' and unpacked with 'dpkg-deb -x' under $SENDMAIL_ROOT
# (default $MILTERKIT_LAB_DIR/sendmail-root). The versions unpacked are recorded in
# $SENDMAIL_ROOT/VERSIONS (one "package version" per line), read by scripts/interop_table.ts.
#
# Usage: scripts/peers/install-extra.sh [--versions]
set -euo pipefail
. "$(dirname "$0")/lib.sh"
export DEBIAN_FRONTEND=noninteractive
SENDMAIL_ROOT="${SENDMAIL_ROOT:-$LAB_DIR/sendmail-root}"
SM_BIN="$SENDMAIL_ROOT/usr/libexec/sendmail/sendmail"

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

apt_install() {
  # stale or missing lists: refresh once and retry
  apt-get install -y -q --no-install-recommends -o Dpkg::Use-Pty=0 "$@" >/dev/null 2>&1 || {
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends -o Dpkg::Use-Pty=0 "$@" >/dev/null
  }
}

missing=()
# the shared libraries sendmail-bin links (its Depends, minus the MTA conflict)
for p in m4 liblockfile1 libwrap0 libdb5.3 libldap-2.5-0 libnsl2 libsasl2-2 libssl3 procps python3-milter; do installed "$p" || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then apt_install "${missing[@]}"; fi

if [ ! -x "$SM_BIN" ] || [ ! -s "$SENDMAIL_ROOT/VERSIONS" ]; then
  tmp=$(mktemp -d "$LAB_DIR/sendmail-dl.XXXXXX")
  chmod 755 "$tmp" # apt's _apt user writes the download
  fetch() { (cd "$tmp" && apt-get download -q sendmail-bin sendmail-base sendmail-cf >/dev/null 2>&1); }
  fetch || { apt-get update -q >/dev/null; fetch; }
  rm -rf "$SENDMAIL_ROOT.new"
  mkdir -p "$SENDMAIL_ROOT.new"
  for deb in "$tmp"/*.deb; do
    dpkg-deb -x "$deb" "$SENDMAIL_ROOT.new"
    echo "$(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version)" >>"$SENDMAIL_ROOT.new/VERSIONS"
  done
  rm -rf "$tmp" "$SENDMAIL_ROOT"
  mv "$SENDMAIL_ROOT.new" "$SENDMAIL_ROOT" # atomic for concurrent test runs
fi

if [ "${1:-}" = --versions ]; then
  cat "$SENDMAIL_ROOT/VERSIONS"
  for p in m4 python3-milter; do echo "$p $(dpkg-query -W -f='${Version}' "$p")"; done
fi
