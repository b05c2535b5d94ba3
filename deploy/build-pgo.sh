#!/usr/bin/env bash
# Builds fulcrum with profile-guided optimisation (PGO): an instrumented build
# serves a training load on loopback (small and 64 KB answers, keepalive and
# new connections, an ewma pool with a slow server, access log off and on,
# then TLS 1.3 keepalive and HTTP/2 over TLS on a second listener),
# LLVM merges the profile, and a second build lays the code out by it.
# Measured (deploy/bench/README.md): about 18% less user CPU per proxied
# request than `cargo build --release`, 7% less CPU in all.
#
#   deploy/build-pgo.sh [--install]
#
# Writes target/pgo/release/fulcrum (under $CARGO_TARGET_DIR if set) and
# prints its path last. Needs llvm-profdata of the LLVM version rustc uses
# (`rustc -vV`; Debian: apt-get install llvm-22 for rustc 1.95), wrk, curl,
# openssl and h2load (nghttp2-client); --install installs what is missing
# with apt-get. Takes about 12 minutes on 2 cores. Every process it starts
# is stopped on exit.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
# shellcheck source=deploy/lib.sh disable=SC1091
. "$HERE/lib.sh"
# Absolute: rustc reads the profile path from each crate's own directory.
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
TARGET=$(cd "$REPO" && mkdir -p "$TARGET" && cd "$TARGET" && pwd)
PROFILES=$TARGET/pgo-profiles
INSTALL=0
case ${1:-} in
--install) INSTALL=1 ;;
"") ;;
*) echo "usage: deploy/build-pgo.sh [--install]" >&2; exit 2 ;;
esac

log() { echo "build-pgo: [${SECONDS}s] $*" >&2; }
die() { log "error: $*"; exit 1; }

# llvm-profdata must read the profile format of rustc's own LLVM.
LLVM_MAJOR=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
[ -n "$LLVM_MAJOR" ] || die "cannot tell rustc's LLVM version (rustc -vV)"
find_profdata() {
    local c v
    for c in "$(rustc --print sysroot)"/lib/rustlib/*/bin/llvm-profdata \
        "/usr/lib/llvm-$LLVM_MAJOR/bin/llvm-profdata" \
        "$(command -v "llvm-profdata-$LLVM_MAJOR" || true)" \
        "$(command -v llvm-profdata || true)"; do
        [ -x "$c" ] || continue
        v=$("$c" --version 2>/dev/null | sed -n 's/.*LLVM version \([0-9]*\).*/\1/p')
        [ "$v" = "$LLVM_MAJOR" ] && { echo "$c"; return 0; }
    done
    return 1
}
missing=()
PROFDATA=$(find_profdata) || missing+=("llvm-$LLVM_MAJOR")
for tool in wrk curl openssl h2load; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
    [ "$INSTALL" = 1 ] || die "missing: ${missing[*]} (apt-get install ${missing[*]}, or run with --install; without PGO: cargo build --release)"
    log "apt-get install ${missing[*]}"
    apt_install "${missing[@]/h2load/nghttp2-client}"
    PROFDATA=$(find_profdata) || die "no llvm-profdata for LLVM $LLVM_MAJOR after installing llvm-$LLVM_MAJOR"
fi

cd "$REPO"
log "cargo build --release --bin fulcrum-demo-backend (the training backends)"
cargo build --release --bin fulcrum-demo-backend --quiet
BACKEND=$TARGET/release/fulcrum-demo-backend

# Separate target directories: other RUSTFLAGS would otherwise make the next
# plain `cargo build --release` rebuild everything.
log "instrumented build (target/pgo-gen)"
rm -rf "$PROFILES"
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$PROFILES" \
    cargo build --release --bin fulcrum --target-dir "$TARGET/pgo-gen" --quiet
# Build scripts were instrumented too; only the training counts.
rm -rf "$PROFILES"
mkdir -p "$PROFILES"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/fulcrum-pgo.XXXXXX")
PIDS=() FULCRUM_PID=""
cleanup() {
    local pid
    for pid in $FULCRUM_PID "${PIDS[@]}"; do
        kill -INT "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# backend NAME ARGS...: a demo backend on a free port; sets ADDR.
backend() {
    local name=$1
    shift
    "$BACKEND" --name "$name" --listen 127.0.0.1:0 --port-file "$WORK/$name.port" \
        --threads 1 "$@" >"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
    ADDR=$(demo_backend_addr "$WORK/$name.port") || die "backend $name did not start: $(cat "$WORK/$name.log")"
}
backend a --body-size 11
A=$ADDR
backend b --body-size 11
B=$ADDR
backend big --body-size 65536
BIG=$ADDR
backend slow --delay-ms 20
SLOW=$ADDR
PORT=$(free_port python3)
TLS_PORT=$(free_port python3)
# A throwaway certificate for the TLS listener (ECDSA P-256, as the benchmark's).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -keyout "$WORK/tls.key" -out "$WORK/tls.pem" 2>/dev/null

# train ACCESS_LOG: one instrumented run under wrk; its profile is written
# when it exits (SIGINT: Pingora's fast shutdown, a normal exit).
train() {
    local url=http://127.0.0.1:$PORT pid
    cat >"$WORK/fulcrum.yaml" <<EOF
version: 1
threads: 1
pid_file: $WORK/fulcrum.pid
upgrade_sock: $WORK/upgrade.sock
upstream_keepalive_pool_size: 1024
listen:
  - "127.0.0.1:$PORT"
  - addr: "127.0.0.1:$TLS_PORT"
    http2: true
    tls: { certificates: [{ cert: "$WORK/tls.pem", key: "$WORK/tls.key" }] }
access_log: $1
pools:
  small:
    servers: [{ addr: "$A" }, { addr: "$B" }]
  big:
    servers: [{ addr: "$BIG" }]
  skew:
    selection: ewma
    servers: [{ addr: "$A" }, { addr: "$SLOW" }]
routes:
  - { prefix: /big, pool: big }
  - { prefix: /skew, pool: skew }
  - { prefix: /, pool: small }
EOF
    LLVM_PROFILE_FILE="$PROFILES/fulcrum-%p.profraw" \
        "$TARGET/pgo-gen/release/fulcrum" -c "$WORK/fulcrum.yaml" >"$WORK/fulcrum.log" 2>&1 &
    pid=$!
    FULCRUM_PID=$pid
    for _ in $(seq 100); do curl -sf -o /dev/null "$url/health" && break; sleep 0.1; done
    curl -sf -o /dev/null "$url/health" || die "fulcrum did not start: $(tail -5 "$WORK/fulcrum.log")"
    log "training (access_log: $1)"
    wrk -t1 -c50 -d8s "$url/" >/dev/null
    wrk -t1 -c50 -d3s -H "Connection: close" "$url/" >/dev/null
    wrk -t1 -c50 -d3s "$url/big" >/dev/null
    wrk -t1 -c50 -d3s "$url/skew" >/dev/null
    # TLS 1.3 keepalive (HTTP/1.1), then HTTP/2 with 100 streams per
    # connection (the benchmark's h and k).
    wrk -t1 -c50 -d3s "https://127.0.0.1:$TLS_PORT/" >/dev/null
    h2load -t1 -c10 -m100 -D5 "https://127.0.0.1:$TLS_PORT/" >/dev/null
    kill -INT "$pid"
    wait "$pid" || die "the instrumented fulcrum exited with $?: $(tail -5 "$WORK/fulcrum.log")"
    FULCRUM_PID=""
}
train off
train "$WORK/access.log"

ls "$PROFILES"/*.profraw >/dev/null 2>&1 || die "the training wrote no profile"
"$PROFDATA" merge -o "$PROFILES/fulcrum.profdata" "$PROFILES"/*.profraw

log "optimised build (target/pgo)"
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$PROFILES/fulcrum.profdata" \
    cargo build --release --bin fulcrum --target-dir "$TARGET/pgo" --quiet
log "done"
echo "$TARGET/pgo/release/fulcrum"
