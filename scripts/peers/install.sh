#!/usr/bin/env bash
# install.sh - install the real milter peers the interop tests drive (Debian 12 packages):
# Postfix (MTA side), libmilter + gcc (our C test filter), miltertest, OpenDKIM, pymilter, swaks,
# HAProxy and Redis (the scale-out recipe and the shared-state example), headless Chromium (the
# test of dump's HTML report).
# Idempotent and non-interactive: installs only what is missing, runs 'apt-get update' only when
# apt has no package lists (or APT_UPDATE=1, or a first install attempt fails), and keeps package
# scripts from starting daemons. Needs root (or sudo). Prints the installed versions.
#
# Usage: scripts/peers/install.sh [--quiet]
set -euo pipefail
QUIET=0; [ "${1:-}" = --quiet ] && QUIET=1
export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "install.sh: must run as root (or with passwordless sudo) to install Debian packages" >&2
    exit 1
  fi
fi
command -v apt-get >/dev/null || { echo "install.sh: apt-get not found (Debian 12 expected)" >&2; exit 1; }

PKGS=(postfix swaks libmilter-dev gcc libc6-dev miltertest opendkim opendkim-tools python3-milter
  systemd  # systemd: systemd-analyze verify of the unit `milterkit init` writes
  haproxy redis-server  # the scale-out recipe and the shared-state example
  chromium)  # the headless browser test of dump --html

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "install.sh: installing ${missing[*]}"
  # Keep postinst scripts from starting daemons; Debian's container image ships an 'exit 101'
  # policy-rc.d already: add one only for the duration of this script when it is missing.
  CREATED_POLICY=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 755 /usr/sbin/policy-rc.d
    CREATED_POLICY=1
  fi
  cleanup() { if [ "$CREATED_POLICY" = 1 ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi; }
  trap cleanup EXIT

  # Postfix asks on install: 'No configuration' leaves /etc/postfix/main.cf absent, so the
  # system instance never starts; the tests run private instances with 'postfix -c DIR'.
  if [ ! -s /etc/mailname ]; then echo localhost | $SUDO tee /etc/mailname >/dev/null; fi
  $SUDO debconf-set-selections <<'DEB'
postfix postfix/main_mailer_type select No configuration
postfix postfix/mailname string localhost
DEB

  lists=$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v -e '^lock$' -e '^partial$' -e '^auxfiles$' || true)
  if [ -z "$lists" ] || [ "${APT_UPDATE:-0}" = 1 ]; then
    $SUDO apt-get update -q
  fi
  install() {
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -q --no-install-recommends -o Dpkg::Use-Pty=0 ${APT_OPTS:-} "${missing[@]}"
  }
  if ! install; then
    # stale lists (a package version no longer on the mirror): refresh once and retry
    echo "install.sh: apt-get install failed; running apt-get update and retrying" >&2
    $SUDO apt-get update -q
    install
  fi
fi

if [ "$QUIET" = 0 ]; then
  echo "== peer versions"
  for p in "${PKGS[@]}"; do
    printf '%-16s %s\n' "$p" "$(dpkg-query -W -f='${Version}' "$p" 2>/dev/null || echo missing)"
  done
  printf '%-16s %s\n' "postfix(mail_version)" "$(/usr/sbin/postconf -d -h mail_version 2>/dev/null || echo '?')"
fi
