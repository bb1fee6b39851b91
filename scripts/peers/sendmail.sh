#!/usr/bin/env bash
# sendmail.sh - a private Sendmail 8.17 instance for the interop tests (the original milter MTA,
# nobody on the team wrote it), unpacked by install-extra.sh, never installed.
#
#   sendmail.sh up DIR PORT MILTER   build DIR/sendmail.cf and start 'sendmail -bd' on
#                                    127.0.0.1:PORT with one input mail filter MILTER, in
#                                    Sendmail's own syntax: inet:PORT@127.0.0.1,
#                                    inet6:PORT@::1 or unix:/path (F=T: tempfail when it is down)
#   sendmail.sh down DIR [--purge]   stop it (and delete DIR with --purge)
#
# Sendmail sleeps 60 s per start when the machine's host name has no dot ('My unqualified host
# name (vm) unknown'). Instead of touching /etc/hosts, the daemon runs in a private MOUNT
# namespace (unshare -m) where DIR/hosts is bind-mounted over /etc/hosts; the network namespace
# is the normal one, so the tests reach it on 127.0.0.1 and it reaches their filter.
# Every accepted message for user/other/added/... @example.test (or @localhost) is appended to
# DIR/mail/USER (mbox, one file per local user); quarantined messages stay in DIR/queue (qf file with a 'q' line).
# Env: SENDMAIL_ROOT (default $MILTERKIT_LAB_DIR/sendmail-root), SENDMAIL_EXTRA_MC (m4 lines).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
CMD="${1:-}"
BASE="${2:-}"
[ -n "$BASE" ] || { echo "usage: sendmail.sh up DIR PORT MILTER | down DIR [--purge]" >&2; exit 2; }
ROOT="${SENDMAIL_ROOT:-$LAB_DIR/sendmail-root}"
SM="$ROOT/usr/libexec/sendmail/sendmail"
PIDF="$BASE/sendmail.pid"

stop_instance() {
  [ -s "$PIDF" ] || return 0
  local pid
  pid=$(head -1 "$PIDF" | tr -dc '0-9') # line 1 pid, line 2 the command line
  [ -n "$pid" ] && alive "$pid" || return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 100); do alive "$pid" || return 0; sleep 0.02; done
  kill -9 "$pid" 2>/dev/null || true
}

case "$CMD" in
  down)
    stop_instance
    if [ "${3:-}" = --purge ]; then rm -rf "$BASE"; fi
    exit 0
    ;;
  up) ;;
  *) echo "usage: sendmail.sh up DIR PORT MILTER | down DIR [--purge]" >&2; exit 2 ;;
esac

PORT="${3:?usage: sendmail.sh up DIR PORT MILTER}"
MILTER="${4:?usage: sendmail.sh up DIR PORT MILTER}"

if [ "${MILTERKIT_SM_NS:-}" != 1 ]; then
  [ -x "$SM" ] || bash "$PEERS_DIR/install-extra.sh"
  stop_instance
  if is_listening "$PORT"; then echo "sendmail.sh: port $PORT is already in use" >&2; exit 1; fi
  mkdir -p "$BASE/queue"
  chmod 755 "$BASE"
  chmod 700 "$BASE/queue"
  H=$(hostname)
  printf '127.0.0.1\tlocalhost\n127.0.0.1\t%s.milterkit.test %s\n::1\tlocalhost ip6-localhost\n' \
    "$H" "$H" >"$BASE/hosts"
  # re-run this script in a private mount namespace (the daemon stays in it)
  MILTERKIT_SM_NS=1 exec unshare -m --propagation private bash "$0" "$@"
fi

mount --bind "$BASE/hosts" /etc/hosts
mkdir -p "$BASE/mail"
chmod 755 "$BASE/mail"
printf 'hosts\tfiles\naliases\tfiles\n' >"$BASE/service.switch"
for u in user other added added-par changed-from sender removed postmaster root MAILER-DAEMON; do
  : >"$BASE/mail/$u"
  chmod 666 "$BASE/mail/$u"
  echo "$u: $BASE/mail/$u"
done >"$BASE/aliases"

cat >"$BASE/sendmail.mc" <<MC
divert(-1)
include(\`$ROOT/usr/share/sendmail/cf/m4/cf.m4')dnl
VERSIONID(\`milterkit-lab')dnl
OSTYPE(\`linux')dnl
define(\`confDOMAIN_NAME', \`mta.example.test')dnl
define(\`confDONT_PROBE_INTERFACES', \`True')dnl
define(\`confSERVICE_SWITCH_FILE', \`$BASE/service.switch')dnl
define(\`confHOSTS_FILE', \`/etc/hosts')dnl
define(\`QUEUE_DIR', \`$BASE/queue')dnl
define(\`confPID_FILE', \`$PIDF')dnl
define(\`STATUS_FILE', \`$BASE/statistics')dnl
define(\`ALIAS_FILE', \`$BASE/aliases')dnl
define(\`confDELIVERY_MODE', \`interactive')dnl
define(\`confBIND_OPTS', \`-DNSRCH -DEFNAMES')dnl
define(\`confTO_IDENT', \`0s')dnl
define(\`confPRIVACY_FLAGS', \`goaway')dnl
define(\`confMAX_MESSAGE_SIZE', \`0')dnl
define(\`confDONT_BLAME_SENDMAIL', \`GroupWritableDirPathSafe,FileDeliveryToHardLink,FileDeliveryToSymlink')dnl
define(\`confMILTER_LOG_LEVEL', \`0')dnl
INPUT_MAIL_FILTER(\`lab', \`S=$MILTER, F=T, T=C:10s;S:30s;R:30s;E:2m')dnl
DAEMON_OPTIONS(\`Port=$PORT, Addr=127.0.0.1, Name=MTA, Family=inet')dnl
FEATURE(\`nocanonify')dnl
FEATURE(\`accept_unresolvable_domains')dnl
FEATURE(\`accept_unqualified_senders')dnl
FEATURE(\`no_default_msa')dnl
LOCAL_DOMAIN(\`example.test')dnl
LOCAL_DOMAIN(\`localhost')dnl
${SENDMAIL_EXTRA_MC:-}
MAILER(\`local')dnl
MAILER(\`smtp')dnl
MC
m4 "$BASE/sendmail.mc" >"$BASE/sendmail.cf"
"$SM" -C "$BASE/sendmail.cf" -bi >/dev/null
"$SM" -C "$BASE/sendmail.cf" -bd -q30m -X "$BASE/smtp.trace"
wait_listen "$PORT" 15
VERSION=$("$SM" -d0.1 -bt -C "$BASE/sendmail.cf" </dev/null 2>&1 | awk '/^Version/{print $2; exit}')
echo "sendmail $VERSION pid $(head -1 "$PIDF") on 127.0.0.1:$PORT milter=$MILTER dir=$BASE"
