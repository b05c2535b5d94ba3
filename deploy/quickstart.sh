#!/usr/bin/env bash
# Quick start: builds fulcrum, starts six demo backends on loopback (two per
# service) and fulcrum on conf/fulcrum.yaml (port 8080). Ctrl-C stops all.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cmake >/dev/null; then
    if [ "$(id -u)" -eq 0 ]; then SUDO=(); else SUDO=(sudo); fi
    echo "quickstart: installing cmake (needed to build Pingora)"
    "${SUDO[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq cmake >/dev/null
fi

cargo build --release --bins
bin=target/release

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

"$bin/fulcrum-demo-backend" \
    --listen user-1@127.0.0.1:3001 --listen user-2@127.0.0.1:3011 \
    --listen product-1@127.0.0.1:3002 --listen product-2@127.0.0.1:3012 \
    --listen order-1@127.0.0.1:3003 --listen order-2@127.0.0.1:3013 &
pids+=($!)

"$bin/fulcrum" -t -c conf/fulcrum.yaml
"$bin/fulcrum" -c conf/fulcrum.yaml &
pids+=($!)

for _ in $(seq 50); do
    curl -fs http://127.0.0.1:8080/health >/dev/null 2>&1 && break
    sleep 0.1
done

cat <<'TXT'

fulcrum is serving on :8080 (Ctrl-C stops it and the demo backends). Try:
  curl http://127.0.0.1:8080/api/users/7           # alternates user-1 / user-2
  curl http://127.0.0.1:8080/api/products
  curl http://127.0.0.1:8080/api/orders?delay_ms=200
  curl http://127.0.0.1:8080/health
  curl http://127.0.0.1:8080/nginx-status          # nginx stub_status format
  curl http://127.0.0.1:8080/nginx-status/json     # pools, servers, health

TXT
wait "${pids[1]}"
