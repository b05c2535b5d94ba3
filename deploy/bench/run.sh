#!/usr/bin/env bash
# fulcrum's side-by-side benchmark against nginx and HAProxy (see README.md
# in this directory). Sets up the same loopback topology for every contender,
# runs the scenarios with wrk, and writes BENCHMARKS.md and ratios.png.
#
#   deploy/bench/run.sh [--quick] [--no-install] [--no-pgo] [--bin-dir DIR] [--pgo-bin FILE] [--out DIR] [--keep]
#
# Every process it starts is a child of this script, recorded by pid and
# stopped on exit, including on failure or Ctrl-C.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# shellcheck source=deploy/lib.sh disable=SC1091
. "$REPO/deploy/lib.sh"
COMMAND="deploy/bench/run.sh${*:+ $*}"

usage() {
    cat <<EOF
usage: deploy/bench/run.sh [--quick] [--no-install] [--no-pgo] [--bin-dir DIR]
                           [--pgo-bin FILE] [--out DIR]
                           [--scenarios a,b,c,d,e,f,g,h,i,j,k] [--keep]
  --quick        about a minute and a half: 1 s runs, 500 idle connections
                 (smoke test); implies --no-pgo
  --no-install   do not apt-get install nginx, haproxy, wrk, nghttp2-client
                 (h2load), openssl, llvm (fail if missing); no matplotlib
                 download either (built-in PNG writer)
  --no-pgo       measure fulcrum as 'cargo build --release' builds it, not the
                 profile-guided build of deploy/build-pgo.sh (the default)
  --bin-dir DIR  use DIR/fulcrum, DIR/fulcrum-demo-backend and (if built)
                 DIR/examples/bare_pingora instead of building them with
                 'cargo build --release --bins --example bare_pingora' and
                 deploy/build-pgo.sh
  --pgo-bin FILE with --bin-dir: FILE is the profile-guided fulcrum (as
                 deploy/build-pgo.sh printed it), measured as "fulcrum" with
                 DIR/fulcrum beside it as "fulcrum, without PGO"; so that a
                 run on a quiet machine need not start with the build
  --out DIR      write BENCHMARKS.md and ratios.png to DIR
                 (default: BENCHMARKS.md at the repo root, deploy/bench/ratios.png)
  --scenarios L  run only these scenarios (comma-separated; default: all);
                 the report keeps the sections of the others from the
                 BENCHMARKS.md it replaces, marked as from that earlier run
  --keep         keep the work directory (configs, logs, raw results)
Environment, for experiments: BENCH_FULCRUM_EXTRA_YAML is appended to every
fulcrum config (top level, e.g. 'work_stealing: false'); BENCH_CONTENDERS
(e.g. "fulcrum nginx") limits scenarios a-d and h-k to those contenders.
EOF
}

QUICK=0 INSTALL=1 KEEP=0 PGO=1 BIN_DIR="" PGO_GIVEN="" OUT="" ONLY=a,b,c,d,e,f,g,h,i,j,k
while [ $# -gt 0 ]; do
    case $1 in
    --quick) QUICK=1 ;;
    --no-install) INSTALL=0 ;;
    --no-pgo) PGO=0 ;;
    --keep) KEEP=1 ;;
    --scenarios) ONLY=${2:?--scenarios needs a list}; shift ;;
    --bin-dir) BIN_DIR=$(cd "${2:?--bin-dir needs a directory}" && pwd); shift ;;
    --pgo-bin) PGO_GIVEN=$(cd "$(dirname "${2:?--pgo-bin needs a file}")" && pwd)/$(basename "$2"); shift ;;
    --out) mkdir -p "${2:?--out needs a directory}"; OUT=$(cd "$2" && pwd); shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
    shift
done

log() { echo "bench: [${SECONDS}s] $*" >&2; }
die() { log "error: $*"; exit 1; }

if [ -n "$PGO_GIVEN" ] && { [ -z "$BIN_DIR" ] || [ "$QUICK" = 1 ] || [ "$PGO" = 0 ]; }; then
    die "--pgo-bin goes with --bin-dir, and not with --quick or --no-pgo"
fi
if [ "$QUICK" = 1 ]; then
    PGO=0
    DUR=1 WARM=0 IDLE_CONNS=500 HOLD=1 RATE=2000 ROUNDS_A=1 ROUNDS_D=1 ROUNDS_TLS=1
else
    # d's p99 moves by 2x from run to run, a's CPU per request by 15-25%
    # (2026-12-04): the report takes the median of ROUNDS_A / ROUNDS_D
    # interleaved runs per contender.
    DUR=10 WARM=2 IDLE_CONNS=10000 HOLD=3 RATE=5000 ROUNDS_A=3 ROUNDS_D=5
    # The TLS scenarios h-k: interleaved rounds, as a.
    ROUNDS_TLS=3
fi
CONNS=50 # client connections for every wrk run
# HTTP/2 (k): h2load's connections and streams in flight on each.
H2_CONNS=10 H2_STREAMS=100
# Idle upstream connections nginx (keepalive) and fulcrum
# (upstream_keepalive_pool_size) keep per worker: 128 as fulcrum's default,
# raised in k (see there).
UPSTREAM_IDLE=128

# --- tools -----------------------------------------------------------------

wanted() { [[ ",$ONLY," == *",$1,"* ]]; }
tls_wanted() { wanted h || wanted i || wanted j || wanted k; }

missing=()
tools=(nginx haproxy wrk curl taskset)
# The TLS scenarios make their certificates with openssl; i and j build a
# small shim for wrk (noresume.c) with cc; k loads with h2load.
if tls_wanted; then tools+=(openssl); fi
if wanted i || wanted j; then tools+=(cc); fi
if wanted k; then tools+=(h2load); fi
for tool in "${tools[@]}"; do
    command -v "$tool" >/dev/null || PATH=$PATH:/usr/sbin command -v "$tool" >/dev/null || missing+=("$tool")
done
export PATH=$PATH:/usr/sbin # nginx lives there; not on every user's PATH
if [ ${#missing[@]} -gt 0 ]; then
    [ "$INSTALL" = 1 ] || die "missing: ${missing[*]} (apt-get install nginx haproxy wrk curl util-linux openssl nghttp2-client)"
    pkgs=()
    for tool in "${missing[@]}"; do
        case $tool in
        taskset) pkgs+=(util-linux) ;;
        h2load) pkgs+=(nghttp2-client) ;;
        cc) pkgs+=(gcc libc6-dev) ;;
        *) pkgs+=("$tool") ;;
        esac
    done
    log "installing ${pkgs[*]}"
    apt_install "${pkgs[@]}"
fi
command -v python3 >/dev/null || die "python3 is needed"
# The real interpreter: a version manager's shim (pyenv) costs a second per call.
PYTHON=$(python3 -c 'import sys; print(sys.executable)')

# fulcrum as measured: the profile-guided build when this script builds it
# (what deploy/build-pgo.sh gives users), and the plain one beside it in a).
PGO_BIN="" BUILD="given by --bin-dir"
if [ -z "$BIN_DIR" ]; then
    log "cargo build --release --bins --example bare_pingora"
    (cd "$REPO" && cargo build --release --bins --example bare_pingora --quiet)
    BIN_DIR=${CARGO_TARGET_DIR:-$REPO/target}/release
    BUILD="cargo build --release"
    if [ "$PGO" = 1 ]; then
        log "deploy/build-pgo.sh (about 6 minutes; --no-pgo skips it)"
        pgo_opts=()
        [ "$INSTALL" = 0 ] || pgo_opts=(--install)
        PGO_BIN=$("$REPO/deploy/build-pgo.sh" "${pgo_opts[@]}" | tail -1) ||
            die "the profile-guided build failed (see above); --no-pgo measures the plain release build"
        BUILD="profile-guided, deploy/build-pgo.sh: $PGO_BIN (bare Pingora and 'fulcrum, without PGO': cargo build --release)"
    fi
fi
if [ -n "$PGO_GIVEN" ]; then
    [ -x "$PGO_GIVEN" ] || die "no profile-guided fulcrum at $PGO_GIVEN"
    PGO_BIN=$PGO_GIVEN
    BUILD="profile-guided, deploy/build-pgo.sh: $PGO_BIN (given by --pgo-bin; bare Pingora and 'fulcrum, without PGO': $BIN_DIR, given by --bin-dir)"
fi
if [ ! -x "$BIN_DIR/fulcrum" ] || [ ! -x "$BIN_DIR/fulcrum-demo-backend" ]; then
    die "no fulcrum binaries in $BIN_DIR"
fi

# 10,000 idle connections need as many descriptors in the client and in the proxy.
want_fds=$((IDLE_CONNS * 2 + 1024))
if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt "$want_fds" ]; then
    ulimit -Hn "$want_fds" 2>/dev/null || true # only root may raise it
fi
ulimit -Sn "$(ulimit -Hn)"
FD_LIMIT=$(ulimit -n)
[ "$FD_LIMIT" != unlimited ] || FD_LIMIT=$want_fds
[ "$FD_LIMIT" -ge $((IDLE_CONNS + 200)) ] || die "open-file limit $FD_LIMIT is too low for $IDLE_CONNS connections"
[ "$FD_LIMIT" -le "$want_fds" ] || FD_LIMIT=$want_fds

# CPU placement (2 cores): the proxy under test gets CPU 1 to itself; the load
# generator and the backend share CPU 0. The proxy's core is then the one that
# saturates, and its CPU time is not disturbed by wrk. One core: no pinning.
if [ "$(nproc)" -ge 2 ]; then PROXY_CPU=1 LOAD_CPU=0; else PROXY_CPU="" LOAD_CPU=""; fi
on_cpu() { # CPU CMD... : runs CMD on that CPU (any CPU when empty)
    local cpu=$1
    shift
    if [ -n "$cpu" ]; then taskset -c "$cpu" "$@"; else "$@"; fi
}

# --- processes ---------------------------------------------------------------

WORK=$(mktemp -d "${TMPDIR:-/tmp}/fulcrum-bench.XXXXXX")
RESULTS=$WORK/results.jsonl
# A copy, so that a concurrent cargo build cannot swap the binaries mid-run.
mkdir "$WORK/bin"
cp "$BIN_DIR/fulcrum" "$BIN_DIR/fulcrum-demo-backend" "$WORK/bin/"
FULCRUM=$WORK/bin/fulcrum
# With PGO, "fulcrum" is the profile-guided binary and the plain one is kept
# as the contender fulcrum-nopgo.
NOPGO=""
if [ -n "$PGO_BIN" ]; then
    mv "$WORK/bin/fulcrum" "$WORK/bin/fulcrum-nopgo"
    NOPGO=$WORK/bin/fulcrum-nopgo
    cp "$PGO_BIN" "$FULCRUM"
fi
BACKEND=$WORK/bin/fulcrum-demo-backend
# The floor under fulcrum: Pingora alone (examples/bare_pingora.rs).
BARE=""
if [ -x "$BIN_DIR/examples/bare_pingora" ]; then
    cp "$BIN_DIR/examples/bare_pingora" "$WORK/bin/"
    BARE=$WORK/bin/bare_pingora
fi
PIDS=()

declare -A STOP_SIGNAL # pid -> signal that stops it promptly (default TERM)

stop_pid() { # PID: its stop signal (to it and its children), SIGKILL after 5 s
    local pid=$1 kids
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kids=$(cat /proc/"$pid"/task/*/children 2>/dev/null || true)
    kill -"${STOP_SIGNAL[$pid]:-TERM}" "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    # shellcheck disable=SC2086 # kids is a list of pids
    kill -KILL "$pid" $kids 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$? pid
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    if [ "$KEEP" = 1 ] || [ "$rc" != 0 ]; then
        log "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME CPU CMD...: starts CMD in the background, output to NAME.log; sets
# PID to CMD's own pid (taskset execs it), so signals reach it directly.
start() {
    local name=$1 cpu=$2
    shift 2
    if [ -n "$cpu" ]; then
        taskset -c "$cpu" "$@" >"$WORK/$name.log" 2>&1 &
    else
        "$@" >"$WORK/$name.log" 2>&1 &
    fi
    PID=$!
    PIDS+=("$PID")
}

# stop PID: stops one started process and forgets it.
stop() {
    local pid=$1 p keep=()
    stop_pid "$pid"
    for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

wait_ready() { # PORT PID NAME: until GET / answers 200 (over TLS 1.3 when $TLS is set)
    local url=http://127.0.0.1:$1/ tls=()
    [ -z "$TLS" ] || url=https://127.0.0.1:$1/ tls=(-k --tlsv1.3)
    for _ in $(seq 200); do
        curl -sf "${tls[@]}" -o /dev/null "$url" && return 0
        kill -0 "$2" 2>/dev/null || die "$3 exited; its log: $(tail -5 "$WORK/$3.log")"
        sleep 0.05
    done
    die "$3 does not answer on port $1; its log: $(tail -5 "$WORK/$3.log")"
}

# backend NAME CPU ARGS...: a demo backend on a port of its own; sets PORT, PID.
backend() {
    local name=$1 cpu=$2
    shift 2
    rm -f "$WORK/$name.port" # a backend of this name may have run before (f, then g)
    start "$name" "$cpu" "$BACKEND" --name "$name" --listen 127.0.0.1:0 \
        --port-file "$WORK/$name.port" --threads 1 "$@"
    PORT=$(demo_backend_addr "$WORK/$name.port") || die "backend $name did not start: $(cat "$WORK/$name.log")"
    PORT=${PORT##*:}
    wait_ready "$PORT" "$PID" "$name"
}

# --- TLS ---------------------------------------------------------------------
# The scenarios h-k put every contender's listener behind TLS 1.3 with ALPN
# h2 and http/1.1, serving one throwaway self-signed certificate made here
# with openssl (no private key is committed): TLS=ec, an ECDSA P-256 key;
# TLS=rsa, RSA 2048. TLS empty: plain HTTP (scenarios a-g).
TLS=""
CERTS=$WORK/certs
make_certs() {
    local kind
    mkdir -p "$CERTS"
    for kind in ec rsa; do
        local newkey=(-newkey ec -pkeyopt ec_paramgen_curve:P-256)
        [ "$kind" = ec ] || newkey=(-newkey rsa:2048)
        # 30 days: fulcrum -t warns of a certificate that expires within 14.
        openssl req -x509 "${newkey[@]}" -nodes -days 30 -subj /CN=localhost \
            -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
            -keyout "$CERTS/$kind.key" -out "$CERTS/$kind.pem" 2>"$CERTS/$kind.log" ||
            die "openssl could not make the $kind certificate: $(cat "$CERTS/$kind.log")"
        # HAProxy's crt: the certificate and its key in one file.
        cat "$CERTS/$kind.pem" "$CERTS/$kind.key" >"$CERTS/$kind.haproxy.pem"
    done
}

# --- contender configs -------------------------------------------------------
# Same topology everywhere: /big -> the 64 KB backend, everything else -> the
# small backend (or, for the skew scenario, / -> {fast, slow}). Same timeouts
# (connect 1s, read/send 60s), upstream keepalive, and the same forwarded
# headers (X-Forwarded-For, X-Real-IP, X-Forwarded-Proto, X-Request-Id), so
# every proxy does the same work.

# fulcrum_conf DIR PORT THREADS ACCESS_LOG SELECTION SERVERS... (SERVERS: pool=addr)
fulcrum_conf() {
    local dir=$1 port=$2 threads=$3 alog=$4 sel=$5 s
    shift 5
    {
        echo "version: 1"
        echo "threads: $threads"
        echo "pid_file: $dir/fulcrum.pid"
        echo "upgrade_sock: $dir/upgrade.sock"
        [ "$UPSTREAM_IDLE" = 128 ] || echo "upstream_keepalive_pool_size: $UPSTREAM_IDLE"
        if [ -n "$TLS" ]; then
            echo "listen:"
            echo "  - addr: \"127.0.0.1:$port\""
            echo "    http2: true"
            echo "    tls: { certificates: [{ cert: \"$CERTS/$TLS.pem\", key: \"$CERTS/$TLS.key\" }], protocols: [tlsv1.3] }"
        else
            echo "listen: [\"127.0.0.1:$port\"]"
        fi
        echo "access_log: $alog"
        echo "pools:"
        for pool in small big skew; do
            printf '%s\n' "$@" | grep -q "^$pool=" || continue
            echo "  $pool:"
            # SEL may carry a decay for ewma: "ewma/1s".
            echo "    selection: ${sel%%/*}"
            [[ $sel != */* ]] || echo "    decay: ${sel#*/}"
            echo "    connect_timeout: 1s"
            echo "    read_timeout: 60s"
            echo "    write_timeout: 60s"
            echo "    servers:"
            for s in "$@"; do
                [ "${s%%=*}" = "$pool" ] && echo "      - addr: \"${s#*=}\""
            done
        done
        echo "routes:"
        if printf '%s\n' "$@" | grep -q '^skew='; then
            echo "  - { prefix: /, pool: skew }"
        else
            echo "  - { prefix: /big, pool: big }"
            echo "  - { prefix: /, pool: small }"
        fi
        if [ -n "${BENCH_FULCRUM_EXTRA_YAML:-}" ]; then echo "$BENCH_FULCRUM_EXTRA_YAML"; fi
    } >"$dir/fulcrum.yaml"
}

# nginx_conf DIR PORT WORKERS SERVERS...
nginx_conf() {
    local dir=$1 port=$2 workers=$3 s pool
    shift 3
    {
        echo "worker_processes $workers;"
        echo "daemon off;"
        echo "pid $dir/nginx.pid;"
        echo "error_log $dir/error.log warn;"
        # As root the workers would run as nobody, who cannot write here.
        [ "$(id -u)" -ne 0 ] || echo "user root;"
        echo "worker_rlimit_nofile $FD_LIMIT;"
        echo "events { worker_connections $((IDLE_CONNS + 1024)); }"
        echo "http {"
        echo "  access_log off;"
        # nginx closes a keepalive connection after 1000 requests by default;
        # fulcrum and HAProxy do not, so neither does nginx here.
        echo "  keepalive_timeout 75s; keepalive_requests 1000000;"
        for t in client_body proxy fastcgi uwsgi scgi; do echo "  ${t}_temp_path $dir/$t;"; done
        # X-Request-Id: the client's, else a new one (as fulcrum and HAProxy do).
        cat <<'NGINX'
  map $http_x_request_id $req_id { default $http_x_request_id; "" $request_id; }
NGINX
        for pool in small big skew; do
            printf '%s\n' "$@" | grep -q "^$pool=" || continue
            echo "  upstream $pool {"
            echo "    least_conn;"
            for s in "$@"; do
                [ "${s%%=*}" = "$pool" ] && echo "    server ${s#*=} max_fails=1 fail_timeout=10s;"
            done
            # As many idle upstream connections as fulcrum keeps (128 by default).
            echo "    keepalive $UPSTREAM_IDLE; keepalive_requests 1000000; keepalive_timeout 60s;"
            echo "  }"
        done
        echo "  server {"
        if [ -n "$TLS" ]; then
            # As nginx 1.22 spells HTTP/2 (ALPN h2) on a TLS listener. Left at
            # their defaults: ssl_session_cache none (nothing stored),
            # ssl_session_tickets on, http2_max_concurrent_streams 128.
            echo "    listen 127.0.0.1:$port ssl http2;"
            echo "    ssl_certificate $CERTS/$TLS.pem;"
            echo "    ssl_certificate_key $CERTS/$TLS.key;"
            echo "    ssl_protocols TLSv1.3;"
        else
            echo "    listen 127.0.0.1:$port;"
        fi
        cat <<'NGINX'
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host $http_host;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_set_header X-Real-IP $remote_addr;
    proxy_set_header X-Forwarded-Proto $scheme;
    proxy_set_header X-Request-Id $req_id;
    add_header X-Request-Id $req_id always;
    proxy_connect_timeout 1s; proxy_read_timeout 60s; proxy_send_timeout 60s;
NGINX
        if printf '%s\n' "$@" | grep -q '^skew='; then
            echo "    location / { proxy_pass http://skew; }"
        else
            echo "    location /big { proxy_pass http://big; }"
            echo "    location / { proxy_pass http://small; }"
        fi
        echo "  }"
        echo "}"
    } >"$dir/nginx.conf"
}

# haproxy_conf DIR PORT THREADS SERVERS...
haproxy_conf() {
    local dir=$1 port=$2 threads=$3 s pool n
    shift 3
    {
        echo "global"
        echo "  nbthread $threads"
        # HAProxy wants 2 descriptors per maxconn and refuses to start when it
        # cannot raise the limit that far; idle client connections need one
        # each, so the limit we have suffices: warn instead of failing.
        echo "  no strict-limits"
        echo "  maxconn $((IDLE_CONNS + 1024))"
        echo "  pidfile $dir/haproxy.pid"
        echo "defaults"
        echo "  mode http"
        echo "  timeout connect 1s"
        echo "  timeout client 60s"
        echo "  timeout server 60s"
        echo "  timeout http-keep-alive 75s"
        echo "  maxconn $((IDLE_CONNS + 1024))"
        echo "  option forwardfor"
        echo "  http-reuse always"
        echo "frontend fe"
        if [ -n "$TLS" ]; then
            # Defaults otherwise: tune.ssl.cachesize 20000, tickets on,
            # tune.h2.max-concurrent-streams 100.
            echo "  bind 127.0.0.1:$port ssl crt $CERTS/$TLS.haproxy.pem alpn h2,http/1.1 ssl-min-ver TLSv1.3"
            echo '  http-request set-header X-Forwarded-Proto https'
        else
            echo "  bind 127.0.0.1:$port"
            echo '  http-request set-header X-Forwarded-Proto http'
        fi
        echo '  unique-id-format %{+X}o%ci%cp%fp%Ts%rt%pid'
        echo '  http-request set-header X-Real-IP %[src]'
        echo '  http-request set-header X-Request-Id %[unique-id] unless { req.hdr(x-request-id) -m found }'
        echo '  http-response set-header X-Request-Id %[unique-id]'
        if printf '%s\n' "$@" | grep -q '^skew='; then
            echo "  default_backend skew"
        else
            echo "  use_backend big if { path_beg /big }"
            echo "  default_backend small"
        fi
        for pool in small big skew; do
            printf '%s\n' "$@" | grep -q "^$pool=" || continue
            echo "backend $pool"
            echo "  balance leastconn"
            n=0
            for s in "$@"; do
                [ "${s%%=*}" = "$pool" ] || continue
                n=$((n + 1))
                echo "  server s$n ${s#*=}"
            done
        done
    } >"$dir/haproxy.cfg"
}

# proxy KIND NAME CPU THREADS ACCESS_LOG SELECTION SERVERS...: starts a
# contender (fulcrum | fulcrum-nopgo | pingora | nginx | haproxy) on a new
# port; sets PORT and PID.
proxy() {
    local kind=$1 name=$2 cpu=$3 threads=$4 alog=$5 sel=$6 dir bin
    shift 6
    dir=$WORK/$name
    mkdir -p "$dir"
    PORT=$(free_port "$PYTHON")
    case $kind in
    fulcrum | fulcrum-nopgo)
        [ "$alog" = off ] || alog=$dir/access.log
        fulcrum_conf "$dir" "$PORT" "$threads" "$alog" "$sel" "$@"
        bin=$FULCRUM
        [ "$kind" = fulcrum ] || bin=$NOPGO
        start "$name" "$cpu" "$bin" -c "$dir/fulcrum.yaml"
        STOP_SIGNAL[$PID]=INT # SIGTERM would wait out Pingora's grace period
        ;;
    pingora) # its two upstreams: small=ADDR big=ADDR
        # With TLS set: a TLS listener with ALPN h2 and http/1.1.
        start "$name" "$cpu" "$BARE" "127.0.0.1:$PORT" "${1#small=}" "${2#big=}" "$threads" \
            ${TLS:+"$CERTS/$TLS.pem" "$CERTS/$TLS.key"}
        STOP_SIGNAL[$PID]=INT
        ;;
    nginx)
        nginx_conf "$dir" "$PORT" "$threads" "$@"
        start "$name" "$cpu" nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf"
        ;;
    haproxy)
        haproxy_conf "$dir" "$PORT" "$threads" "$@"
        start "$name" "$cpu" haproxy -db -f "$dir/haproxy.cfg"
        ;;
    esac
    wait_ready "$PORT" "$PID" "$name"
}


# --- measurements ------------------------------------------------------------

LOAD_PIN=() # the load generator's CPU, as a command prefix
[ -z "$LOAD_CPU" ] || LOAD_PIN=(taskset -c "$LOAD_CPU")
WRK=("${LOAD_PIN[@]}" wrk)
# Per scenario: extra wrk options, arguments of wrk_report.lua (a rate), and
# extra measure.py options (backends to count on); LOADER=h2load loads with
# h2load (HTTP/2, k) instead of wrk.
WRK_OPTS=() SCRIPT_ARGS=() MEASURE_OPTS=() MEASURE_ROUND=() LOADER=wrk

# load SCENARIO CONTENDER PID URL: a warm-up run, then the measured one
# (a JSON line in $RESULTS, a summary on stderr).
load() {
    local scn=$1 who=$2 pid=$3 url=$4 common
    if [ "$LOADER" = h2load ]; then
        # h2load_report.py runs h2load and prints its result as wrk_report.lua does.
        common=(-t1 -c"$H2_CONNS" -m"$H2_STREAMS" "$url")
        # The warm-up counts requests (-n, about WARM seconds' worth) instead
        # of running for a time: h2load then waits for every answer before it
        # closes, so the proxies keep their upstream connections idle for the
        # measured run; one stopped at a time leaves ~1,000 streams in flight,
        # whose upstream connections the proxies close, and the measured run
        # began with a burst of ~1,000 connects to the single-threaded backend
        # (some timed out after 1 s on a busy machine).
        [ "$WARM" = 0 ] || "${LOAD_PIN[@]}" h2load -n"$((WARM * 25000))" "${common[@]}" >/dev/null
        "$PYTHON" "$HERE/measure.py" --pid "$pid" --out "$RESULTS" \
            --set scenario="$scn" --set contender="$who" "${MEASURE_OPTS[@]}" "${MEASURE_ROUND[@]}" -- \
            "${LOAD_PIN[@]}" "$PYTHON" "$HERE/h2load_report.py" -D"$DUR" "${common[@]}"
        return
    fi
    common=(-t1 -c"$CONNS" "${WRK_OPTS[@]}" -s "$HERE/wrk_report.lua" "$url" -- "${SCRIPT_ARGS[@]}")
    [ "$WARM" = 0 ] || "${WRK[@]}" -d"${WARM}s" "${common[@]}" >/dev/null
    "$PYTHON" "$HERE/measure.py" --pid "$pid" --out "$RESULTS" \
        --set scenario="$scn" --set contender="$who" "${MEASURE_OPTS[@]}" "${MEASURE_ROUND[@]}" -- \
        "${WRK[@]}" -d"${DUR}s" "${common[@]}"
}

# start_contender SCENARIO WHO: a fresh instance for one scenario (so its peak
# RSS is that scenario's); sets PORT and PID. "direct" is the backend itself.
start_contender() {
    local scn=$1 who=$2
    case $who in
    direct) PORT=$SMALL_PORT PID=$SMALL_PID ;;
    fulcrum) proxy fulcrum "$scn-$who" "$PROXY_CPU" 1 off least_conn "${UPSTREAMS[@]}" ;;
    fulcrum-log) proxy fulcrum "$scn-$who" "$PROXY_CPU" 1 file least_conn "${UPSTREAMS[@]}" ;;
    fulcrum-nopgo) proxy fulcrum-nopgo "$scn-$who" "$PROXY_CPU" 1 off least_conn "${UPSTREAMS[@]}" ;;
    pingora) proxy pingora "$scn-$who" "$PROXY_CPU" 1 - - "${UPSTREAMS[@]}" ;;
    nginx | haproxy) proxy "$who" "$scn-$who" "$PROXY_CPU" 1 - - "${UPSTREAMS[@]}" ;;
    esac
}

# scenario SCENARIO PATH CONTENDERS...: one measured run per contender, or
# ROUNDS of them, interleaved (every contender once, then again), so that a
# slow spell of the machine does not fall on one contender only.
scenario() {
    local scn=$1 path=$2 who round
    shift 2
    log "scenario $scn (${DUR}s per run, ${ROUNDS:-1} round(s))"
    for round in $(seq "${ROUNDS:-1}"); do
        MEASURE_ROUND=(--set round="$round")
        for who in "$@"; do
            # BENCH_CONTENDERS (e.g. "fulcrum nginx") narrows a run for experiments.
            [[ " ${BENCH_CONTENDERS:-$who} " == *" $who "* ]] || continue
            if [ "$who" = pingora ] && [ -z "$BARE" ]; then
                log "  no $BIN_DIR/examples/bare_pingora (cargo build --release --example bare_pingora): its row is left out"
                continue
            fi
            start_contender "$scn" "$who"
            if [ "$who" = direct ] && [ "$path" = /big ]; then PORT=$BIG_PORT PID=$BIG_PID; fi
            load "$scn" "$who" "$PID" "http${TLS:+s}://127.0.0.1:$PORT$path"
            [ "$who" = direct ] || stop "$PID"
        done
    done
    MEASURE_ROUND=()
}

log "work directory $WORK"
# Other work on the machine skews absolute numbers; the report shows how busy it was.
LOAD_START=$(cut -d' ' -f1 /proc/loadavg)
# The fast backend shares the load generator's CPU (see above). The demo
# backend costs the same CPU per request as nginx 'return 200' here, and it
# also serves 64 KB bodies, delays and per-backend counts (README).
backend small "$LOAD_CPU" --body-size 11
SMALL_PORT=$PORT SMALL_PID=$PID
backend big "$LOAD_CPU" --body-size 65536
BIG_PORT=$PORT BIG_PID=$PID
UPSTREAMS=("small=127.0.0.1:$SMALL_PORT" "big=127.0.0.1:$BIG_PORT")

idle_scenario() {
    log "scenario e ($IDLE_CONNS idle connections)"
    for who in fulcrum nginx haproxy; do
        start_contender e "$who"
        on_cpu "$LOAD_CPU" "$PYTHON" "$HERE/idle.py" --port "$PORT" --conns "$IDLE_CONNS" \
            --hold "$HOLD" --pid "$PID" --out "$RESULTS" --set scenario=e --set contender="$who"
        stop "$PID"
    done
}

# skew_scenario SCENARIO SELECTIONS...: two backends, one 20 ms slower; two
# workers per proxy (nginx keeps least_conn counts per worker, fulcrum shares
# them). Nothing is pinned: the slow backend, not a CPU, limits these runs.
# f runs closed-loop (as fast as answers come), g at the fixed rate of d.
skew_scenario() {
    local scn=$1 sel dir skew who
    shift
    log "scenario $scn (skew: one of two backends adds 20 ms)"
    backend fast "" --body-size 11
    local fast=$PORT fast_pid=$PID
    backend slow "" --body-size 11 --delay-ms 20
    local slow_pid=$PID
    skew=("skew=127.0.0.1:$fast" "skew=127.0.0.1:$PORT")
    MEASURE_OPTS=(--backend "fast=http://127.0.0.1:$fast" --backend "slow=http://127.0.0.1:$PORT")
    WRK=(wrk)
    for sel in "$@"; do
        who=fulcrum-${sel//\//-}
        # ewma and p2c are measured once the config check accepts them.
        dir=$WORK/$scn-check-$who
        mkdir -p "$dir"
        fulcrum_conf "$dir" 1 2 off "$sel" "${skew[@]}"
        if ! "$FULCRUM" -t -c "$dir/fulcrum.yaml" >"$dir/check.log" 2>&1; then
            log "  fulcrum $sel: not available ($(grep -m1 selection "$dir/check.log" || tail -1 "$dir/check.log"))"
            echo "{\"scenario\": \"$scn\", \"contender\": \"$who\", \"unavailable\": true}" >>"$RESULTS"
            continue
        fi
        proxy fulcrum "$scn-$who" "" 2 off "$sel" "${skew[@]}"
        load "$scn" "$who" "$PID" "http://127.0.0.1:$PORT/"
        stop "$PID"
    done
    for who in nginx haproxy; do
        proxy "$who" "$scn-$who" "" 2 - - "${skew[@]}"
        load "$scn" "$who" "$PID" "http://127.0.0.1:$PORT/"
        stop "$PID"
    done
    stop "$fast_pid"
    stop "$slow_pid"
    MEASURE_OPTS=()
    WRK=("${LOAD_PIN[@]}" wrk)
}

if wanted a; then ROUNDS=$ROUNDS_A scenario a / direct fulcrum fulcrum-log ${NOPGO:+fulcrum-nopgo} pingora nginx haproxy; fi
if wanted b; then
    WRK_OPTS=(-H "Connection: close")
    scenario b / direct fulcrum pingora nginx haproxy
    WRK_OPTS=()
fi
if wanted c; then scenario c /big direct fulcrum pingora nginx haproxy; fi
if wanted d; then
    SCRIPT_ARGS=("$RATE") # paced: wrk_report.lua's fixed schedule
    ROUNDS=$ROUNDS_D scenario d / direct fulcrum pingora nginx haproxy
    SCRIPT_ARGS=()
fi
if wanted e; then idle_scenario; fi
if wanted f; then skew_scenario f least_conn round_robin ewma ewma/1s p2c; fi
if wanted g; then
    # At the fixed rate of d, below every contender's saturation (round_robin,
    # with half the requests on the 20 ms backend, cannot keep up: left out).
    SCRIPT_ARGS=("$RATE")
    skew_scenario g least_conn ewma ewma/1s
    SCRIPT_ARGS=()
fi
# TLS 1.3 (issue 26): fulcrum, bare Pingora, nginx and HAProxy behind the
# same certificate; no direct row (the backend speaks plain HTTP).
if tls_wanted; then make_certs; fi
TLS_CONTENDERS=(fulcrum ${NOPGO:+fulcrum-nopgo} pingora nginx haproxy)
if wanted h; then TLS=ec ROUNDS=$ROUNDS_TLS scenario h / "${TLS_CONTENDERS[@]}"; fi
if wanted i || wanted j; then
    # A new connection, so a full handshake, per request: wrk would resume
    # the previous connection's session (it keeps it across SSL_clear),
    # noresume.c makes it drop it.
    cc -shared -fPIC -O2 -o "$WORK/noresume.so" "$HERE/noresume.c" -ldl ||
        die "cc could not build $HERE/noresume.c"
    WRK=(env "LD_PRELOAD=$WORK/noresume.so" "${LOAD_PIN[@]}" wrk)
    WRK_OPTS=(-H "Connection: close")
    if wanted i; then TLS=ec ROUNDS=$ROUNDS_TLS scenario i / "${TLS_CONTENDERS[@]}"; fi
    if wanted j; then TLS=rsa ROUNDS=$ROUNDS_TLS scenario j / "${TLS_CONTENDERS[@]}"; fi
    WRK=("${LOAD_PIN[@]}" wrk) WRK_OPTS=()
fi
if wanted k; then
    # h2load, ALPN h2; the backend counts the upstream connections opened.
    # With 1,000 requests in flight and 128 idle upstream connections kept,
    # nginx and fulcrum opened a new upstream connection for 30-40% of the
    # requests and spent much of their CPU on it (README): both keep 1,024
    # here (HAProxy keeps idle connections without a count limit).
    MEASURE_OPTS=(--backend "small=http://127.0.0.1:$SMALL_PORT")
    UPSTREAM_IDLE=1024 LOADER=h2load TLS=ec ROUNDS=$ROUNDS_TLS scenario k / "${TLS_CONTENDERS[@]}"
    MEASURE_OPTS=()
fi

# --- report ------------------------------------------------------------------

if [ -n "$OUT" ]; then
    MD=$OUT/BENCHMARKS.md PNG=$OUT/ratios.png PNG_REF=ratios.png
else
    MD=$REPO/BENCHMARKS.md PNG=$HERE/ratios.png PNG_REF=deploy/bench/ratios.png
fi
# matplotlib for the chart when downloads are allowed and time is not short;
# otherwise report.py draws it with its own small PNG writer.
PY=$PYTHON
if [ "$INSTALL" = 1 ] && [ "$QUICK" = 0 ]; then
    log "installing matplotlib into a venv"
    if "$PYTHON" -m venv "$WORK/venv" && "$WORK/venv/bin/pip" install -q matplotlib >"$WORK/pip.log" 2>&1; then
        PY=$WORK/venv/bin/python
    else
        log "matplotlib unavailable (see $WORK/pip.log); using the built-in PNG writer"
    fi
fi
"$PY" "$HERE/report.py" --results "$RESULTS" --md "$MD" --png "$PNG" --png-ref "$PNG_REF" \
    --command "$COMMAND" --repo "$REPO" --fulcrum "$FULCRUM" --build "$BUILD" \
    --settings "duration=${DUR}s warmup=${WARM}s rounds_of_a=$ROUNDS_A rounds_of_d=$ROUNDS_D rounds_of_tls=$ROUNDS_TLS connections=$CONNS h2load_connections=$H2_CONNS h2load_streams=$H2_STREAMS rate=$RATE idle=$IDLE_CONNS proxy_cpu=${PROXY_CPU:-any} load_cpu=${LOAD_CPU:-any} binaries=$BIN_DIR load_average_at_start=$LOAD_START"
log "wrote $MD and $PNG"
