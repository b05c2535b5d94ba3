#!/usr/bin/env bash
# Installs fulcrum on this machine (the replacement for a "deploy-with-lb"
# script): the binary, the config for this machine, the environment file and
# the systemd unit. Safe to run again: unchanged files are left alone, and on a
# host where fulcrum already runs a change is applied by a graceful upgrade
# (no dropped connection), never by a restart.
#
#   install.sh --machine 1|2 --env MACHINE1_IP=10.0.0.1 --env MACHINE2_IP=10.0.0.2
#
# Options:
#   --machine N         install conf/machineN.yaml (default: --config is required)
#   --config FILE       install this config instead
#   --binary PATH       fulcrum binary to install (default target/release/fulcrum,
#                       built with cargo if missing)
#   --env KEY=VALUE     write KEY=VALUE to the environment file (repeatable);
#                       without --env an existing environment file is kept
#   --prefix DIR        install under DIR instead of / (for tests and packaging)
#   --no-systemd        do not install or use the systemd unit; start and
#                       upgrade the process directly (deploy/fulcrum-upgrade)
#   --no-start          install only; do not start or upgrade anything
#   --dry-run           say what would change, change nothing
#
# Steps: validate the new config with the new binary first (nothing changes if
# it is invalid), then install changed files, then start fulcrum if it is not
# running, or upgrade the running process if anything changed.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MACHINE=""
CONFIG=""
BINARY=""
PREFIX=""
SYSTEMD=1
START=1
DRY=0
ENVS=()

die() { echo "install.sh: $*" >&2; exit 1; }
say() { echo "install.sh: $*"; }

while [ $# -gt 0 ]; do
    case $1 in
        --machine) MACHINE=$2; shift 2 ;;
        --config) CONFIG=$2; shift 2 ;;
        --binary) BINARY=$2; shift 2 ;;
        --env) ENVS+=("$2"); shift 2 ;;
        --prefix) PREFIX=${2%/}; shift 2 ;;
        --no-systemd) SYSTEMD=0; shift ;;
        --no-start) START=0; shift ;;
        --dry-run) DRY=1; shift ;;
        -h|--help) sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (--help)" ;;
    esac
done

if [ -z "$CONFIG" ]; then
    [ -n "$MACHINE" ] || die "give --machine 1|2 or --config FILE"
    CONFIG=$ROOT/conf/machine$MACHINE.yaml
fi
[ -f "$CONFIG" ] || die "no config file $CONFIG"
if [ -z "$BINARY" ]; then
    BINARY=$ROOT/target/release/fulcrum
    if [ ! -x "$BINARY" ]; then
        say "building fulcrum (cargo build --release)"
        (cd "$ROOT" && cargo build --release --bin fulcrum)
    fi
fi
[ -x "$BINARY" ] || die "binary $BINARY is not executable"
if [ "$SYSTEMD" -eq 1 ] && ! command -v systemctl >/dev/null; then
    die "systemctl not found: use --no-systemd on hosts without systemd"
fi

BIN_DIR=$PREFIX/usr/local/bin
ETC_DIR=$PREFIX/etc/fulcrum
UNIT_DIR=$PREFIX/etc/systemd/system
DEST_BIN=$BIN_DIR/fulcrum
DEST_UPGRADE=$BIN_DIR/fulcrum-upgrade
DEST_CONF=$ETC_DIR/fulcrum.yaml
DEST_ENV=$ETC_DIR/fulcrum.env
DEST_UNIT=$UNIT_DIR/fulcrum.service

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT

# The environment file: given --env values, else the installed one.
if [ ${#ENVS[@]} -gt 0 ]; then
    printf '%s\n' "# fulcrum environment (written by install.sh)" "${ENVS[@]}" >"$STAGE/fulcrum.env"
elif [ -f "$DEST_ENV" ]; then
    cp "$DEST_ENV" "$STAGE/fulcrum.env"
else
    : >"$STAGE/fulcrum.env"
fi

# Runs a command with the environment file's variables set.
with_env() {
    local vars=()
    while IFS= read -r line; do
        case $line in ''|'#'*) continue ;; esac
        vars+=("$line")
    done <"$STAGE/fulcrum.env"
    env "${vars[@]}" "$@"
}

# 1. Validate before touching anything.
if ! out=$(with_env "$BINARY" -t -c "$CONFIG" 2>&1); then
    echo "$out" >&2
    die "the new config does not validate with the new binary; nothing was changed"
fi
say "config $CONFIG validates with $BINARY"

# Expands ${NAME} and ${NAME:-default} like fulcrum does, from the env file.
expand() {
    local s=$1 out="" name def val
    while [[ $s =~ ^([^$]*)\$\{([A-Za-z0-9_]+)(:-([^}]*))?\}(.*)$ ]]; do
        out+=${BASH_REMATCH[1]}
        name=${BASH_REMATCH[2]}
        def=${BASH_REMATCH[4]}
        val=$(with_env printenv "$name" || true)
        out+=${val:-$def}
        s=${BASH_REMATCH[5]}
    done
    echo "$out$s"
}
yaml_value() { # top-level scalar KEY of the config
    sed -n "s/^$1:[[:space:]]*//p" "$CONFIG" | head -n 1 | sed 's/[[:space:]]*#.*$//; s/^"//; s/"$//'
}
PID_FILE=$(expand "$(yaml_value pid_file)")
PID_FILE=${PID_FILE:-/tmp/pingora.pid}

# 2. Install what changed (atomically: copy beside, then rename).
CHANGED=0
install_file() { # src dest mode
    local src=$1 dest=$2 mode=$3
    if [ -f "$dest" ] && cmp -s "$src" "$dest"; then
        say "unchanged $dest"
        return 0
    fi
    CHANGED=1
    if [ "$DRY" -eq 1 ]; then
        say "would install $dest"
        return 0
    fi
    mkdir -p "$(dirname "$dest")"
    cp "$src" "$dest.new"
    chmod "$mode" "$dest.new"
    mv -f "$dest.new" "$dest"
    say "installed $dest"
}

OLD_BIN_COPY=""
if [ -x "$DEST_BIN" ]; then
    OLD_BIN_COPY=$STAGE/fulcrum.old
    cp "$DEST_BIN" "$OLD_BIN_COPY"
fi
install_file "$BINARY" "$DEST_BIN" 0755
install_file "$ROOT/deploy/fulcrum-upgrade" "$DEST_UPGRADE" 0755
install_file "$CONFIG" "$DEST_CONF" 0644
install_file "$STAGE/fulcrum.env" "$DEST_ENV" 0644
UNIT_CHANGED=0
if [ "$SYSTEMD" -eq 1 ]; then
    before=$CHANGED
    CHANGED=0
    install_file "$ROOT/deploy/fulcrum.service" "$DEST_UNIT" 0644
    UNIT_CHANGED=$CHANGED
    CHANGED=$((before | CHANGED))
fi

if [ "$DRY" -eq 1 ]; then
    say "dry run: nothing changed"
    exit 0
fi
if [ "$START" -eq 0 ]; then
    say "done (--no-start: not starting or upgrading)"
    exit 0
fi

running_pid() {
    local pid
    [ -f "$PID_FILE" ] || return 1
    pid=$(cat "$PID_FILE")
    kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

# 3. Start, or upgrade gracefully.
if [ "$SYSTEMD" -eq 1 ]; then
    # The unit's daemon runs as this user once it has bound its sockets.
    if ! id -u fulcrum >/dev/null 2>&1; then
        say "creating the system user fulcrum"
        useradd --system --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin --user-group fulcrum
    fi
    [ "$UNIT_CHANGED" -eq 1 ] && systemctl daemon-reload
    if systemctl is-active --quiet fulcrum; then
        if [ "$CHANGED" -eq 1 ]; then
            say "fulcrum is running: graceful upgrade (systemctl reload fulcrum)"
            systemctl reload fulcrum
        else
            say "fulcrum is running and nothing changed"
        fi
    else
        say "starting fulcrum (systemctl enable --now fulcrum)"
        systemctl enable --now fulcrum
    fi
else
    if pid=$(running_pid); then
        if [ "$CHANGED" -eq 1 ]; then
            say "fulcrum is running (pid $pid): graceful upgrade"
            with_env "$DEST_UPGRADE" --config "$DEST_CONF" --binary "$DEST_BIN" --pid-file "$PID_FILE"
        else
            say "fulcrum is running (pid $pid) and nothing changed"
        fi
    else
        say "starting fulcrum ($DEST_BIN -d -c $DEST_CONF)"
        mkdir -p "$(dirname "$PID_FILE")"
        with_env "$DEST_BIN" -d -c "$DEST_CONF"
        for _ in $(seq 100); do running_pid >/dev/null && break; sleep 0.1; done
        pid=$(running_pid) || die "fulcrum did not start (no live pid in $PID_FILE)"
        say "fulcrum started (pid $pid)"
    fi
fi
say "done"
