#!/usr/bin/env bash
# The reference two-machine deployment on one host, in network namespaces.
#
#   demo.sh up        create machines m1, m2 and a client, start the demo
#                     services on the reference ports and fulcrum on each
#                     machine with conf/machine1.yaml / conf/machine2.yaml
#   demo.sh up --tls  the same with the traffic between the machines
#                     encrypted (conf/machineN-tls.yaml): services on
#                     loopback, each fulcrum reaching the other over TLS with
#                     client certificates from a throwaway CA made here
#   demo.sh down      stop every process it started (by pid) and remove every
#                     namespace and link it created
#   demo.sh status    what is running
#   demo.sh stop-service M SVC | start-service M SVC    (M: m1|m2, SVC: user|product|order)
#   demo.sh machine-down M | machine-up M               (M's link down / up)
#   demo.sh exec M CMD...                               (run CMD inside machine M or client)
#
# Addresses are private and exist only inside the namespaces: a switch
# namespace holds a bridge, and m1 (10.77.0.1), m2 (10.77.0.2) and the client
# (10.77.0.100) hang off it with veth pairs. Nothing is added to the host's
# own network namespace.
#
# Binaries: FULCRUM_BIN and DEMO_BIN (default target/release, else target/debug).
# State (pids, logs): DEMO_STATE (default /tmp/fulcrum-demo).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATE=${DEMO_STATE:-/tmp/fulcrum-demo}
PREFIX=${DEMO_PREFIX:-fdemo}
SW="$PREFIX-sw"
NET=10.77.0
M1_IP=$NET.1
M2_IP=$NET.2
CLIENT_IP=$NET.100

pick_bin() {
    local name=$1 var=$2
    if [ -n "${!var:-}" ]; then
        echo "${!var}"
    elif [ -x "$ROOT/target/release/$name" ]; then
        echo "$ROOT/target/release/$name"
    elif [ -x "$ROOT/target/debug/$name" ]; then
        echo "$ROOT/target/debug/$name"
    else
        echo "demo.sh: $name not built (cargo build --release --bins) and $var not set" >&2
        exit 1
    fi
}

ns() { echo "$PREFIX-$1"; }
ip_of() { case $1 in m1) echo "$M1_IP" ;; m2) echo "$M2_IP" ;; client) echo "$CLIENT_IP" ;; esac; }

# Reference port map: service -> port on m1 / m2.
port_of() {
    case "$1:$2" in
        m1:user) echo 3001 ;; m2:user) echo 3011 ;;
        m1:product) echo 3002 ;; m2:product) echo 3012 ;;
        m1:order) echo 3013 ;; m2:order) echo 3003 ;;
        *) echo "demo.sh: unknown machine/service $1 $2" >&2; exit 2 ;;
    esac
}

need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "demo.sh: network namespaces need root (run with sudo)" >&2
        exit 1
    fi
    command -v ip >/dev/null || { echo "demo.sh: 'ip' (iproute2) is required" >&2; exit 1; }
}

# Starts a process inside namespace $1, records its pid under $2.
spawn() {
    local netns=$1 tag=$2
    shift 2
    ip netns exec "$netns" "$@" >"$STATE/$tag.log" 2>&1 &
    echo $! >"$STATE/$tag.pid"
}

stop_pid_file() {
    local f=$1 pid
    [ -f "$f" ] || return 0
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
}

wait_http() {
    local netns=$1 url=$2
    for _ in $(seq 100); do
        if ip netns exec "$netns" curl -fs -o /dev/null --max-time 1 "$url"; then return 0; fi
        sleep 0.1
    done
    echo "demo.sh: $url did not answer" >&2
    return 1
}

# With --tls the services are reachable from their own machine only.
tls_mode() { [ -f "$STATE/tls/ca.pem" ]; }

service_ip() { if tls_mode; then echo 127.0.0.1; else ip_of "$1"; fi; }

start_service() {
    local m=$1 svc=$2 port ip
    port=$(port_of "$m" "$svc")
    ip=$(service_ip "$m")
    spawn "$(ns "$m")" "$m-$svc" "$DEMO" --listen "$svc-$m@$ip:$port"
    wait_http "$(ns "$m")" "http://$ip:$port/health"
}

# A throwaway CA and one certificate per machine, for its address, good as
# server and as client certificate (ECDSA P-256, 30 days).
make_certs() {
    local dir=$STATE/tls m
    mkdir -p "$dir"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
        -subj "/CN=fulcrum demo CA" -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
    for m in m1 m2; do
        local n=${m#m}
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -subj "/CN=machine$n" -keyout "$dir/machine$n.key" -out "$dir/machine$n.csr" 2>/dev/null
        printf 'subjectAltName=IP:%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$(ip_of "$m")" >"$dir/machine$n.ext"
        openssl x509 -req -in "$dir/machine$n.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
            -CAcreateserial -days 30 -extfile "$dir/machine$n.ext" -out "$dir/machine$n.pem" 2>/dev/null
    done
    rm -f "$dir/ca.key"
}

# The config of machine $1 in this mode.
config_of() {
    if tls_mode; then echo "$ROOT/conf/machine${1#m}-tls.yaml"; else echo "$ROOT/conf/machine${1#m}.yaml"; fi
}

start_fulcrum() {
    local m=$1 n=${1#m}
    mkdir -p "$STATE/run-$m"
    spawn "$(ns "$m")" "$m-fulcrum" env MACHINE1_IP=$M1_IP MACHINE2_IP=$M2_IP \
        FULCRUM_RUN_DIR="$STATE/run-$m" FULCRUM_TLS_DIR="$STATE/tls" RUST_LOG=info \
        "$FULCRUM" -c "$(config_of "$m")"
}

up() {
    need_root
    if ip netns list | grep -q "^$SW\b"; then
        echo "demo.sh: already up (demo.sh down first)" >&2
        exit 1
    fi
    FULCRUM=$(pick_bin fulcrum FULCRUM_BIN)
    DEMO=$(pick_bin fulcrum-demo-backend DEMO_BIN)
    mkdir -p "$STATE"
    if [ "${1:-}" = --tls ]; then
        command -v openssl >/dev/null || { echo "demo.sh: --tls needs openssl" >&2; exit 1; }
        make_certs
    fi
    for m in m1 m2; do
        MACHINE1_IP=$M1_IP MACHINE2_IP=$M2_IP FULCRUM_RUN_DIR="$STATE/run-$m" \
            FULCRUM_TLS_DIR="$STATE/tls" "$FULCRUM" -t -c "$(config_of "$m")" >/dev/null
    done

    ip netns add "$SW"
    ip -n "$SW" link set lo up
    ip -n "$SW" link add br0 type bridge
    ip -n "$SW" link set br0 up
    for m in m1 m2 client; do
        ip netns add "$(ns "$m")"
        ip -n "$(ns "$m")" link set lo up
        # veth: "eth0" inside the machine, "$m" on the switch's bridge.
        ip -n "$SW" link add "$m" type veth peer name eth0 netns "$(ns "$m")"
        ip -n "$SW" link set "$m" master br0 up
        ip -n "$(ns "$m")" addr add "$(ip_of "$m")/24" dev eth0
        ip -n "$(ns "$m")" link set eth0 up
    done

    for m in m1 m2; do
        for svc in user product order; do start_service "$m" "$svc"; done
    done
    for m in m1 m2; do start_fulcrum "$m"; done
    for m in m1 m2; do wait_http "$(ns client)" "http://$(ip_of "$m"):8080/health"; done

    cat <<EOF
demo is up: m1 $M1_IP, m2 $M2_IP, client $CLIENT_IP (state in $STATE)
try, from the client namespace:
  sudo ip netns exec $(ns client) curl -s http://$M1_IP:8080/api/users
  sudo ip netns exec $(ns client) curl -s http://$M2_IP:8080/api/orders
  sudo ip netns exec $(ns client) curl -s http://$M1_IP:8080/health
  sudo ip netns exec $(ns m1) curl -s http://127.0.0.1:8080/nginx-status/json
  sudo $0 stop-service m1 user      # then watch /api/users keep answering from m2
  sudo $0 machine-down m2           # m1's fulcrum keeps serving every prefix
  sudo $ROOT/deploy/test-load-balancing.sh --via "ip netns exec $(ns client)" $M1_IP $M2_IP
  sudo $0 down
EOF
}

down() {
    need_root
    if [ -d "$STATE" ]; then
        for f in "$STATE"/*-fulcrum.pid "$STATE"/*.pid; do
            [ -e "$f" ] && stop_pid_file "$f"
        done
        # Upgraded fulcrum processes are named by their pid files.
        for f in "$STATE"/run-*/fulcrum.pid; do
            [ -e "$f" ] && stop_pid_file "$f"
        done
    fi
    for m in client m2 m1; do
        ip netns del "$(ns "$m")" 2>/dev/null || true
    done
    ip netns del "$SW" 2>/dev/null || true
    rm -rf "$STATE"
    echo "demo is down"
}

status() {
    if ! ip netns list | grep -q "^$SW\b"; then
        echo "demo is down"
        return 0
    fi
    echo "namespaces: $(ip netns list | grep -o "^$PREFIX-[a-z0-9]*" | tr '\n' ' ')"
    for f in "$STATE"/*.pid; do
        [ -e "$f" ] || continue
        local pid tag
        pid=$(cat "$f")
        tag=$(basename "$f" .pid)
        if kill -0 "$pid" 2>/dev/null; then echo "  $tag: running (pid $pid)"; else echo "  $tag: stopped"; fi
    done
    for m in m1 m2; do
        local code
        code=$(ip netns exec "$(ns client)" curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$(ip_of "$m"):8080/health" || true)
        echo "  fulcrum on $m ($(ip_of "$m"):8080): /health $code"
    done
}

cmd=${1:-}
shift || true
case "$cmd" in
    up) up "$@" ;;
    down) down ;;
    status) status ;;
    stop-service)
        need_root
        stop_pid_file "$STATE/$1-$2.pid"
        echo "stopped $2 on $1"
        ;;
    start-service)
        need_root
        DEMO=$(pick_bin fulcrum-demo-backend DEMO_BIN)
        start_service "$1" "$2"
        echo "started $2 on $1"
        ;;
    machine-down)
        need_root
        ip -n "$SW" link set "$1" down
        echo "$1 is off the network"
        ;;
    machine-up)
        need_root
        ip -n "$SW" link set "$1" up
        echo "$1 is back on the network"
        ;;
    exec)
        need_root
        m=$1
        shift
        exec ip netns exec "$(ns "$m")" "$@"
        ;;
    *)
        sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
        exit 2
        ;;
esac
