# shellcheck shell=bash
# Shell helpers shared by the deploy scripts that build and measure fulcrum
# (deploy/bench/run.sh, deploy/build-pgo.sh). Sourced, not run.

# apt_install PKG...: installs Debian packages quietly, with sudo unless root.
# The packages' own services are not wanted (Debian may start nginx on :80);
# policy-rc.d, where present, already prevents that.
apt_install() {
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# free_port [PYTHON]: a TCP port on 127.0.0.1 that is free now.
free_port() {
    "${1:-python3}" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# demo_backend_addr PORT_FILE: waits up to 5 s for the port file a demo
# backend (--port-file) writes once it listens, and prints its address
# (HOST:PORT); prints nothing if it never came.
demo_backend_addr() {
    for _ in $(seq 100); do [ -s "$1" ] && break; sleep 0.05; done
    [ -s "$1" ] && awk '{ print $2 }' "$1"
}
