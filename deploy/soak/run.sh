#!/usr/bin/env bash
# Soak test (not in CI): runs fulcrum under mixed client load for a given
# time while backends are killed and restarted, one backend's machine is
# blackholed, the config is reloaded (SIGHUP) and the process is upgraded
# (deploy/fulcrum-upgrade). Records RSS, open fds and failed requests over
# time and draws them.
#
#   sudo deploy/soak/run.sh [--minutes 30] [--binary target/release/fulcrum]
#
# Options:
#   --minutes N        how long the load runs (default 30)
#   --binary PATH      fulcrum binary (default target/debug/fulcrum; pass
#                      target/release/fulcrum after cargo build --release);
#                      the demo backend is taken from the same directory
#   --work DIR         scratch directory for configs, logs and raw data
#                      (default: a new /tmp/fulcrum-soak.XXXXXX, kept)
#   --chart PATH       PNG to write (default deploy/soak/soak.png)
#   --results PATH     summary to write (default deploy/soak/RESULTS.md)
#   --kill-every S     kill a random local backend every S seconds, restarted
#                      5 s later (default 20)
#   --blackhole-every S  blackhole the namespaced backend every S seconds for
#                      20 s (default 90)
#   --reload-every S   SIGHUP with a changed weight every S seconds (default 120)
#   --upgrade-every S  graceful upgrade every S seconds (default 360)
#
# Needs root (a network namespace with a veth pair on a free private
# 10.x.y.z/30, torn down at the end), iproute2, python3 (the chart uses
# matplotlib, installed with pip into ~/.cache/fulcrum-soak-venv).
# Expected: zero failed idempotent requests; RSS and fd count flat after
# warm-up (each upgrade starts a new process: the samples follow the pid file).
set -euo pipefail
cd "$(dirname "$0")/../.."

MINUTES=30
BINARY=""
WORK=""
CHART=deploy/soak/soak.png
RESULTS=deploy/soak/RESULTS.md
KILL_EVERY=20
BLACKHOLE_EVERY=90
BLACKHOLE_FOR=20
RELOAD_EVERY=120
UPGRADE_EVERY=360
SAMPLE_EVERY=5

say() { echo "soak: $*"; }
die() { echo "soak: error: $*" >&2; exit 1; }
usage() { sed -n '2,33p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case $1 in
        --minutes) MINUTES=${2:?}; shift 2 ;;
        --binary) BINARY=${2:?}; shift 2 ;;
        --work) WORK=${2:?}; shift 2 ;;
        --chart) CHART=${2:?}; shift 2 ;;
        --results) RESULTS=${2:?}; shift 2 ;;
        --kill-every) KILL_EVERY=${2:?}; shift 2 ;;
        --blackhole-every) BLACKHOLE_EVERY=${2:?}; shift 2 ;;
        --reload-every) RELOAD_EVERY=${2:?}; shift 2 ;;
        --upgrade-every) UPGRADE_EVERY=${2:?}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option $1" ;;
    esac
done

[ "$(id -u)" -eq 0 ] || die "needs root to create a network namespace (run under sudo)"
command -v ip >/dev/null || die "needs iproute2 (ip)"
command -v python3 >/dev/null || die "needs python3"
[ -n "$BINARY" ] || BINARY=target/debug/fulcrum
[ -x "$BINARY" ] || die "no fulcrum binary at $BINARY (cargo build first)"
BINARY=$(realpath "$BINARY")
DEMO=$(dirname "$BINARY")/fulcrum-demo-backend
[ -x "$DEMO" ] || die "no demo backend at $DEMO"
[ -n "$WORK" ] || WORK=$(mktemp -d /tmp/fulcrum-soak.XXXXXX)
mkdir -p "$WORK"
WORK=$(realpath "$WORK")
# Private copies: a rebuild during the run must not change what is upgraded to.
cp "$BINARY" "$WORK/fulcrum"
cp "$DEMO" "$WORK/fulcrum-demo-backend"
SOURCE_BINARY=${BINARY#"$PWD"/}
BINARY=$WORK/fulcrum
DEMO=$WORK/fulcrum-demo-backend
say "binary $SOURCE_BINARY, work dir $WORK, $MINUTES minutes"

VENV=${XDG_CACHE_HOME:-$HOME/.cache}/fulcrum-soak-venv
if ! "$VENV/bin/python" -c 'import matplotlib' 2>/dev/null; then
    say "installing matplotlib into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q matplotlib
fi

EVENTS=$WORK/events.csv
echo "unix_s,event" > "$EVENTS"
event() { echo "$(date +%s),$*" >> "$EVENTS"; say "$*"; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# A free 10.x.y.z/30 for the namespaced backend.
NS=fulcrum-soak-$$
HOST_IF=fsoak$(( $$ % 100000 ))
NET=""
for i in $(seq 0 255); do
    n=$(( ($$ + i * 7919) % 1000000 ))
    b=$(( 100 + n % 100 )); c=$(( (n / 100) % 256 )); d=$(( (n % 64) * 4 ))
    if ! ip -4 route show match "10.$b.$c.$d/30" | grep -qv '^default'; then
        NET=10.$b.$c.$d/30; HOST_IP=10.$b.$c.$(( d + 1 )); NS_IP=10.$b.$c.$(( d + 2 ))
        break
    fi
done
[ -n "$NET" ] || die "no free 10.x.y.z/30 in the root namespace's routes"

LOAD_PID=""
SAMPLER_PID=""
declare -A BACKEND_PID=()
cleanup() {
    set +e
    [ -n "$LOAD_PID" ] && kill "$LOAD_PID" 2>/dev/null
    [ -n "$SAMPLER_PID" ] && kill "$SAMPLER_PID" 2>/dev/null
    if [ -f "$WORK/fulcrum.pid" ]; then
        pid=$(cat "$WORK/fulcrum.pid")
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
    fi
    for name in "${!BACKEND_PID[@]}"; do
        kill -KILL "${BACKEND_PID[$name]}" 2>/dev/null
    done
    ip link del "$HOST_IF" 2>/dev/null
    ip netns del "$NS" 2>/dev/null
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip netns add "$NS"
ip link add "$HOST_IF" type veth peer name eth0 netns "$NS"
ip addr add "$HOST_IP/30" dev "$HOST_IF"
ip link set "$HOST_IF" up
ip -n "$NS" link set lo up
ip -n "$NS" addr add "$NS_IP/30" dev eth0
ip -n "$NS" link set eth0 up
say "namespace $NS on $NET: backend d at $NS_IP"

# Backends: a, b, c on loopback (killed and restarted), d in the namespace.
declare -A BACKEND_ADDR=(
    [a]=127.0.0.1:$(free_port)
    [b]=127.0.0.1:$(free_port)
    [c]=127.0.0.1:$(free_port)
    [d]=$NS_IP:$(free_port)
)
start_backend() {
    local name=$1 wrapper=()
    [ "$name" = d ] && wrapper=(ip netns exec "$NS")
    "${wrapper[@]}" "$DEMO" --name "$name" --listen "${BACKEND_ADDR[$name]}" --threads 1 \
        >> "$WORK/backend-$name.log" 2>&1 &
    BACKEND_PID[$name]=$!
}
for name in a b c d; do start_backend "$name"; done

PORT=$(free_port)
CONF=$WORK/fulcrum.yaml
write_conf() {
    cat > "$CONF" <<EOF
version: 1
threads: 2
pid_file: $WORK/fulcrum.pid
upgrade_sock: $WORK/upgrade.sock
error_log: $WORK/error.log
grace_period_seconds: 5
graceful_shutdown_timeout_seconds: 2
listen: ["127.0.0.1:$PORT"]
access_log: $WORK/access.log
limits:
  client_header_timeout: 10s
  client_body_timeout: 10s
pools:
  svc:
    max_fails: 1
    fail_timeout: 3s
    connect_timeout: 500ms
    read_timeout: 10s
    retry: { on: [error, timeout] }
    health_check: { type: http, path: /health, interval: 1s, timeout: 500ms, rise: 1, fall: 2 }
    servers:
      - { addr: "${BACKEND_ADDR[a]}", weight: $1 }
      - { addr: "${BACKEND_ADDR[b]}" }
      - { addr: "${BACKEND_ADDR[c]}" }
      - { addr: "${BACKEND_ADDR[d]}" }
routes:
  - { prefix: /api, pool: svc }
EOF
}
WEIGHT=1
write_conf "$WEIGHT"
"$BINARY" -t -c "$CONF" >/dev/null
RUST_LOG=warn "$BINARY" -d -c "$CONF"
for _ in $(seq 1 100); do
    if curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null 2>&1; then break; fi
    sleep 0.1
done
curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null || die "fulcrum did not start; see $WORK/error.log"
event "start pid $(cat "$WORK/fulcrum.pid")"

# RSS and fd count of the process named in the pid file.
sampler() {
    echo "unix_s,pid,rss_kb,fds" > "$WORK/samples.csv"
    while true; do
        local pid rss fds
        pid=$(cat "$WORK/fulcrum.pid" 2>/dev/null || true)
        if [ -n "$pid" ] && [ -r "/proc/$pid/status" ]; then
            rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
            fds=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
            [ -n "$rss" ] && echo "$(date +%s),$pid,$rss,$fds" >> "$WORK/samples.csv"
        fi
        sleep "$SAMPLE_EVERY"
    done
}
sampler &
SAMPLER_PID=$!

SECS=$(( MINUTES * 60 ))
python3 deploy/soak/load.py --target "127.0.0.1:$PORT" --seconds "$SECS" --out "$WORK" &
LOAD_PID=$!

START=$(date +%s)
next_kill=$KILL_EVERY
next_blackhole=$(( BLACKHOLE_EVERY / 2 ))
next_reload=$(( RELOAD_EVERY / 2 ))
next_upgrade=$UPGRADE_EVERY
restart_at=()
blackholed_until=0
kills=0; blackholes=0; reloads=0; upgrades=0; upgrade_failures=0
while kill -0 "$LOAD_PID" 2>/dev/null; do
    now=$(( $(date +%s) - START ))
    # Restart killed backends after 5 s.
    keep=()
    for item in "${restart_at[@]}"; do
        if [ "${item%%:*}" -le "$now" ]; then
            start_backend "${item#*:}"
            event "restart ${item#*:}"
        else
            keep+=("$item")
        fi
    done
    restart_at=("${keep[@]}")
    if [ "$now" -ge "$next_kill" ] && [ $(( now + 30 )) -lt "$SECS" ]; then
        names=(a b c)
        victim=${names[$(( RANDOM % 3 ))]}
        if kill -KILL "${BACKEND_PID[$victim]}" 2>/dev/null; then
            wait "${BACKEND_PID[$victim]}" 2>/dev/null || true
            event "kill $victim"
            kills=$(( kills + 1 ))
            restart_at+=("$(( now + 5 )):$victim")
        fi
        next_kill=$(( next_kill + KILL_EVERY ))
    fi
    if [ "$now" -ge "$next_blackhole" ] && [ "$blackholed_until" -eq 0 ] && [ $(( now + 30 )) -lt "$SECS" ]; then
        ip -n "$NS" route add blackhole "$HOST_IP/32"
        event "blackhole d"
        blackholes=$(( blackholes + 1 ))
        blackholed_until=$(( now + BLACKHOLE_FOR ))
        next_blackhole=$(( next_blackhole + BLACKHOLE_EVERY ))
    fi
    if [ "$blackholed_until" -gt 0 ] && [ "$now" -ge "$blackholed_until" ]; then
        ip -n "$NS" route del blackhole "$HOST_IP/32"
        event "unblackhole d"
        blackholed_until=0
    fi
    if [ "$now" -ge "$next_reload" ] && [ $(( now + 30 )) -lt "$SECS" ]; then
        WEIGHT=$(( 3 - WEIGHT ))
        write_conf "$WEIGHT"
        kill -HUP "$(cat "$WORK/fulcrum.pid")"
        event "reload (weight of a: $WEIGHT)"
        reloads=$(( reloads + 1 ))
        next_reload=$(( next_reload + RELOAD_EVERY ))
    fi
    if [ "$now" -ge "$next_upgrade" ] && [ $(( now + 60 )) -lt "$SECS" ]; then
        event "upgrade from pid $(cat "$WORK/fulcrum.pid")"
        if RUST_LOG=warn deploy/fulcrum-upgrade --config "$CONF" --binary "$BINARY" >> "$WORK/upgrade.log" 2>&1; then
            event "upgraded to pid $(cat "$WORK/fulcrum.pid")"
        else
            event "upgrade-failed (see upgrade.log)"
            upgrade_failures=$(( upgrade_failures + 1 ))
        fi
        upgrades=$(( upgrades + 1 ))
        next_upgrade=$(( next_upgrade + UPGRADE_EVERY ))
    fi
    sleep 1
done
wait "$LOAD_PID" || true
LOAD_PID=""
sleep "$SAMPLE_EVERY"
kill "$SAMPLER_PID" 2>/dev/null || true
SAMPLER_PID=""
event "end"

"$VENV/bin/python" deploy/soak/chart.py "$WORK" "$CHART"
say "chart: $CHART"

# Summary.
sum_col() { awk -F, -v c="$1" 'NR > 1 { s += $c } END { print s + 0 }' "$WORK/load.csv"; }
ok=$(sum_col 2); f_idem=$(sum_col 3); f_post=$(sum_col 4); stale=$(sum_col 5)
total=$(( ok + f_idem + f_post ))
warm=$(( START + 120 ))
read -r rss0 fds0 < <(awk -F, -v w="$warm" 'NR > 1 && $1 >= w { print $3, $4; exit }' "$WORK/samples.csv")
read -r rss1 fds1 < <(tail -n 1 "$WORK/samples.csv" | awk -F, '{ print $3, $4 }')
read -r rss_min rss_max fds_min fds_max < <(awk -F, -v w="$warm" 'NR > 1 && $1 >= w {
    if (!n++ || $3 < rmin) rmin = $3; if ($3 > rmax) rmax = $3;
    if (n == 1 || $4 < fmin) fmin = $4; if ($4 > fmax) fmax = $4 }
    END { print rmin, rmax, fmin, fmax }' "$WORK/samples.csv")
pids=$(awk -F, 'NR > 1 { print $2 }' "$WORK/samples.csv" | uniq | wc -l)
{
    echo "# Soak results"
    echo
    echo "Run by \`deploy/soak/run.sh --minutes $MINUTES\` on $(date -u +%Y-%m-%d) ($(uname -sr), $(nproc) CPUs); binary \`$SOURCE_BINARY\`."
    echo
    echo "| figure | value |"
    echo "|---|---|"
    echo "| duration | $MINUTES min of load |"
    echo "| requests | $total ($ok ok) |"
    echo "| failed idempotent requests (GET, PUT) | $f_idem |"
    echo "| failed non-idempotent requests (POST) | $f_post |"
    echo "| stale keepalive connections retried by the client | $stale |"
    echo "| backend kills (SIGKILL, restarted 5 s later) | $kills |"
    echo "| blackholes of backend d ($BLACKHOLE_FOR s each) | $blackholes |"
    echo "| reloads (SIGHUP) | $reloads |"
    echo "| upgrades (deploy/fulcrum-upgrade) | $upgrades ($upgrade_failures failed) |"
    echo "| processes sampled (one per upgrade) | $pids |"
    echo "| RSS after 2 min warm-up / at the end | $(( rss0 / 1024 )) MiB / $(( rss1 / 1024 )) MiB (range after warm-up $(( rss_min / 1024 ))-$(( rss_max / 1024 )) MiB) |"
    echo "| open fds after warm-up / at the end | $fds0 / $fds1 (range after warm-up $fds_min-$fds_max) |"
    echo
    echo "Chart: \`$CHART\` (RSS and fds of the process in the pid file, sampled every ${SAMPLE_EVERY} s; requests per 10 s; blackholes shaded, reloads and upgrades as lines, backend kills as ticks)."
    if [ -s "$WORK/failures.log" ]; then
        echo
        nfail=$(wc -l < "$WORK/failures.log")
        if [ "$nfail" -gt 20 ]; then echo "Failures (first 20 of $nfail):"; else echo "Failures ($nfail):"; fi
        echo
        echo '```'
        head -n 20 "$WORK/failures.log"
        echo '```'
    fi
} > "$RESULTS"
cat "$RESULTS"
say "raw data in $WORK"
