#!/usr/bin/env bash
# Verifies a live fulcrum deployment from outside, given the machines' addresses.
#
#   test-load-balancing.sh [options] ADDR [ADDR...]
#
# Checks, for every balancer ADDR (port --port, default 8080):
#   - /health answers 200;
#   - the status page answers (200, or 403 when this client is outside status.allow);
#   - every service prefix answers 200;
#   - requests to each service through each balancer reach more than one
#     backend (least_conn alternation), told apart by the X-Backend header or
#     the "server" field of the demo backend's JSON;
#   - with --failover STOP_CMD START_CMD: runs STOP_CMD, checks that every
#     request through every balancer still succeeds, then runs START_CMD.
# Prints a pass/fail table; exits 1 if anything failed.
#
# Options:
#   --port N              balancer port (default 8080)
#   --prefixes "A B C"    service prefixes (default "/api/users /api/products /api/orders")
#   --requests N          requests per service and balancer for the split check (default 20)
#   --status-path P       status page (default /nginx-status)
#   --via "CMD"           run curl through CMD, e.g. "ip netns exec client"
#   --failover STOP START shell commands that stop and restart one service
set -euo pipefail

PORT=8080
PREFIXES="/api/users /api/products /api/orders"
REQUESTS=20
STATUS_PATH=/nginx-status
VIA=""
FAIL_STOP=""
FAIL_START=""
ADDRS=()

while [ $# -gt 0 ]; do
    case $1 in
        --port) PORT=$2; shift 2 ;;
        --prefixes) PREFIXES=$2; shift 2 ;;
        --requests) REQUESTS=$2; shift 2 ;;
        --status-path) STATUS_PATH=$2; shift 2 ;;
        --via) VIA=$2; shift 2 ;;
        --failover) FAIL_STOP=$2; FAIL_START=$3; shift 3 ;;
        -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "unknown option $1" >&2; exit 2 ;;
        *) ADDRS+=("$1"); shift ;;
    esac
done
if [ ${#ADDRS[@]} -eq 0 ]; then
    echo "usage: $0 [options] ADDR [ADDR...]   (--help for details)" >&2
    exit 2
fi

read -r -a VIA_CMD <<<"$VIA"
PASS=0
FAIL=0
ROWS=()

record() { # result check detail
    ROWS+=("$(printf '%-4s  %-48s  %s' "$1" "$2" "$3")")
    if [ "$1" = PASS ]; then PASS=$((PASS + 1)); else FAIL=$((FAIL + 1)); fi
}

# curl_code URL -> "CODE"
curl_code() {
    "${VIA_CMD[@]}" curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$1" || true
}

# backend_of URL -> backend identity or "-" (and the status code after a space)
backend_of() {
    local out code id
    out=$("${VIA_CMD[@]}" curl -s -D - --max-time 5 "$1" -w '\n%{http_code}' || true)
    code=$(tail -n 1 <<<"$out")
    id=$(grep -i '^x-backend:' <<<"$out" | head -n 1 | cut -d: -f2- | tr -d ' \r' || true)
    if [ -z "$id" ]; then
        id=$(grep -o '"server":"[^"]*"' <<<"$out" | head -n 1 | cut -d'"' -f4 || true)
    fi
    echo "${id:--} $code"
}

for a in "${ADDRS[@]}"; do
    base="http://$a:$PORT"
    code=$(curl_code "$base/health")
    if [ "$code" = 200 ]; then record PASS "$a /health" "200"; else record FAIL "$a /health" "got $code"; fi

    code=$(curl_code "$base$STATUS_PATH")
    case $code in
        200) record PASS "$a status page" "200" ;;
        403) record PASS "$a status page" "403 (this client is outside status.allow)" ;;
        *) record FAIL "$a status page" "got $code" ;;
    esac

    for p in $PREFIXES; do
        code=$(curl_code "$base$p")
        if [ "$code" = 200 ]; then record PASS "$a $p" "200"; else record FAIL "$a $p" "got $code"; fi

        declare -A seen=()
        bad=0
        for _ in $(seq "$REQUESTS"); do
            read -r id c < <(backend_of "$base$p")
            [ "$c" = 200 ] || bad=$((bad + 1))
            seen[$id]=$(( ${seen[$id]:-0} + 1 ))
        done
        split=""
        for id in "${!seen[@]}"; do split+="$id=${seen[$id]} "; done
        if [ "$bad" -eq 0 ] && [ "${#seen[@]}" -ge 2 ]; then
            record PASS "$a $p reaches both machines" "$split"
        else
            record FAIL "$a $p reaches both machines" "${bad} failed; $split"
        fi
        unset seen
    done
done

if [ -n "$FAIL_STOP" ]; then
    echo "failover: $FAIL_STOP"
    bash -c "$FAIL_STOP"
    for a in "${ADDRS[@]}"; do
        for p in $PREFIXES; do
            bad=0
            for _ in $(seq "$REQUESTS"); do
                c=$(curl_code "http://$a:$PORT$p")
                [ "$c" = 200 ] || bad=$((bad + 1))
            done
            if [ "$bad" -eq 0 ]; then
                record PASS "$a $p during failover" "$REQUESTS/$REQUESTS ok"
            else
                record FAIL "$a $p during failover" "$bad of $REQUESTS failed"
            fi
        done
    done
    echo "failover: $FAIL_START"
    bash -c "$FAIL_START"
fi

printf '%-4s  %-48s  %s\n' RES CHECK DETAIL
for r in "${ROWS[@]}"; do echo "$r"; done
echo "passed: $PASS, failed: $FAIL"
[ "$FAIL" -eq 0 ]
