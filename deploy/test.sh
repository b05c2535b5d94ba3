#!/usr/bin/env bash
# Runs every test of fulcrum: formatting, lints, unit and integration tests.
# Installs what the build and the tests need on Debian (cmake for Pingora's
# zlib-ng; iproute2 and curl for the network-namespace tests; shellcheck for
# the deploy scripts; Chromium for the status page test; nginx, HAProxy, wrk,
# h2load (nghttp2-client), openssl and cc for the benchmark smoke test;
# dpkg-dev, logrotate and man-db for the package test, which installs
# cargo-deb with cargo; dnsmasq for the DNS discovery tests; tcpdump for the
# encrypted two-machine test; python3 with h2 and grpcio for the HTTP/2 and
# gRPC tests) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v cmake >/dev/null || need+=(cmake)
command -v ip >/dev/null || need+=(iproute2)
# The encrypted two-machine test reads the bytes between the namespaces.
command -v tcpdump >/dev/null || need+=(tcpdump)
command -v curl >/dev/null || need+=(curl)
command -v shellcheck >/dev/null || need+=(shellcheck)
[ -x /usr/bin/chromium ] || need+=(chromium fonts-dejavu-core)
# The benchmark harness's smoke test runs the real contenders.
[ -x /usr/sbin/nginx ] || need+=(nginx)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v wrk >/dev/null || need+=(wrk)
# Its TLS scenarios: certificates by openssl, HTTP/2 load by h2load, and a
# small shim for wrk built with cc.
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v openssl >/dev/null || need+=(openssl)
command -v cc >/dev/null || need+=(gcc libc6-dev)
# The package test (deploy/package-test.sh): cargo-deb's dependency lookup,
# the logrotate snippet, the man page.
command -v dpkg-shlibdeps >/dev/null || need+=(dpkg-dev)
command -v logrotate >/dev/null || [ -x /usr/sbin/logrotate ] || need+=(logrotate)
command -v man >/dev/null || need+=(man-db)
# The TLS and HTTP/2 bad-input tests (tests/integration/tls_bad_input.rs,
# h2_abuse.rs): throwaway certificates by openssl; hostile HTTP/2 clients
# in python3 with the h2 library. The gRPC tests (grpc.rs): client and
# server in python3 with grpcio. The WebSocket test (websocket.rs): client
# and server in python3 with websockets. All from pip when python3 lacks
# them (below); the upstream TLS tests (upstream_tls.rs): nginx and openssl.
command -v openssl >/dev/null || need+=(openssl)
command -v python3 >/dev/null || need+=(python3)
python3 -c 'import h2, grpc, websockets' 2>/dev/null || python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
# The DNS discovery tests' DNS server (the binary, without the service).
[ -x /usr/sbin/dnsmasq ] || need+=(dnsmasq-base)
# The systemd unit test (tests/integration/systemd.rs) runs systemd itself,
# in a namespace (unshare and nsenter come with util-linux).
[ -x /lib/systemd/systemd ] || need+=(systemd)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then SUDO=(); else SUDO=(sudo); fi
    echo "test.sh: installing ${need[*]}"
    "${SUDO[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq "${need[@]}" >/dev/null
fi

# MODULE:PACKAGE; grpcio comes as prebuilt wheels from PyPI.
for pair in h2:h2 grpc:grpcio websockets:websockets; do
    if ! python3 -c "import ${pair%%:*}" 2>/dev/null; then
        echo "test.sh: installing ${pair#*:} (python)"
        python3 -m pip install -q "${pair#*:}" 2>/dev/null ||
            python3 -m pip install -q --break-system-packages "${pair#*:}"
    fi
done

echo "test.sh: shellcheck"
mapfile -t scripts < <(find deploy .ci -type f \( -name '*.sh' -o -name fulcrum-upgrade -o -path .ci/run -o -path 'deploy/debian/p*' \))
shellcheck "${scripts[@]}"
echo "test.sh: cargo fmt --check"
cargo fmt --all -- --check
echo "test.sh: cargo clippy"
cargo clippy --all-targets -- -D warnings
echo "test.sh: cargo test"
cargo test --all-targets -- --test-threads="${FULCRUM_TEST_THREADS:-2}"
# Builds the .deb from the debug binary above, installs, runs, removes and
# purges it (root only; docs/operations.md: Debian package).
echo "test.sh: package"
deploy/package-test.sh
echo "test.sh: all tests passed"
