# lib.sh - shared helpers for milterkit's peer scripts (sourced, not run).
# State lives under $MILTERKIT_LAB_DIR (default /var/lib/milterkit-lab): OpenDKIM refuses keys and
# configs below a world-writable directory such as /tmp. Nothing binds to anything but 127.0.0.1.
LAB_DIR="${MILTERKIT_LAB_DIR:-/var/lib/milterkit-lab}"
PEERS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$LAB_DIR"
chmod 755 "$LAB_DIR"

# is_listening PORT: true when something listens on 127.0.0.1:PORT or 0.0.0.0:PORT (reads
# /proc/net/tcp, so no connection is opened).
is_listening() {
  local hex
  hex=$(printf '%04X' "$1")
  awk -v h="$hex" 'NR>1 { split($2,a,":"); if (a[2]==h && $4=="0A") f=1 } END { exit !f }' /proc/net/tcp
}

# wait_listen PORT [SECONDS]
wait_listen() {
  local port=$1 t=${2:-10} i=0
  while ! is_listening "$port"; do
    i=$((i + 1))
    if [ "$i" -gt $((t * 10)) ]; then echo "timeout waiting for 127.0.0.1:$port" >&2; return 1; fi
    sleep 0.1
  done
}

# alive PID: true while PID runs (a zombie waiting for a slow reaper counts as gone).
alive() {
  local st
  st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  st=${st##*) }
  [ "${st%% *}" != Z ]
}
