#!/usr/bin/env bash
# Tests fulcrum's Debian package on this machine: builds it with cargo-deb
# from the debug binary (the one `cargo test` builds: no release build),
# installs it with dpkg, checks its files, validates the packaged config with
# the installed binary, runs the installed binary outside systemd on a free
# loopback port as the unit would (started as root with the unit's
# capability set, then the user fulcrum), rotates its access log with the
# packaged logrotate snippet (SIGUSR1), upgrades it with the installed
# fulcrum-upgrade, stops it, checks that postinst refuses an invalid config,
# then removes the package (the edited config stays) and purges it.
#
#   sudo deploy/package-test.sh [--no-build] [--keep-deb DIR]
#
#   --no-build       package target/debug/fulcrum as it is (no cargo build)
#   --keep-deb DIR   copy the built .deb to DIR
#
# Needs root on Debian (it installs and removes the package), and refuses to
# run where fulcrum is installed (by a package or by deploy/install.sh): it
# would overwrite that installation and then delete it. It cleans up after
# itself whatever happens: the test process, the package, the user fulcrum
# if it created it. Installs cargo-deb (the version CARGO_DEB_VERSION below)
# with cargo when missing; deploy/test.sh installs the Debian packages it needs.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=deploy/lib.sh disable=SC1091
. "$ROOT/deploy/lib.sh"
CARGO_DEB_VERSION=3.8.0
PROG=package-test.sh
KEEP_DEB=""
BUILD=1
STARTED=$(date +%s)

say() { echo "$PROG: $*"; }
fail() {
    echo "$PROG: FAIL: $*" >&2
    exit 1
}

while [ $# -gt 0 ]; do
    case $1 in
        --keep-deb) KEEP_DEB=${2:?--keep-deb needs a directory}; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h | --help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) fail "unknown argument $1 (--help)" ;;
    esac
done

# --- Where it may run --------------------------------------------------------

[ "$(id -u)" -eq 0 ] ||
    fail "must run as root: it installs and removes the fulcrum package with dpkg (sudo $0)"
if [ ! -f /etc/debian_version ] || ! command -v dpkg >/dev/null; then
    fail "needs Debian (dpkg): it builds and installs a .deb"
fi
missing=()
for tool in dpkg-deb:dpkg dpkg-shlibdeps:dpkg-dev logrotate:logrotate curl:curl \
    setpriv:util-linux man:man-db python3:python3 cargo:rustup; do
    command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
[ ${#missing[@]} -eq 0 ] || fail "missing tools; install them: apt-get install ${missing[*]}"

status=$(dpkg-query -W -f='${db:Status-Status}' fulcrum 2>/dev/null || true)
if [ -n "$status" ] && [ "$status" != not-installed ]; then
    fail "the package fulcrum is on this machine (dpkg status: $status); this test installs and purges it: run it where fulcrum is not installed"
fi
for p in /usr/sbin/fulcrum /usr/sbin/fulcrum-upgrade /usr/local/bin/fulcrum /etc/fulcrum \
    /var/log/fulcrum /run/fulcrum /etc/logrotate.d/fulcrum /usr/lib/sysusers.d/fulcrum.conf \
    /usr/lib/systemd/system/fulcrum.service /lib/systemd/system/fulcrum.service \
    /etc/systemd/system/fulcrum.service /etc/systemd/system/multi-user.target.wants/fulcrum.service; do
    if [ -e "$p" ] || [ -L "$p" ]; then
        fail "$p exists: fulcrum is installed here (deploy/install.sh or a package); this test would overwrite it and then delete it"
    fi
done

# --- Cleanup, whatever happens --------------------------------------------

TMP=$(mktemp -d /tmp/fulcrum-package-test.XXXXXX)
# The unprivileged daemon connects to the upgrade socket in here.
chmod 0755 "$TMP"
INSTALLED=0
USER_EXISTED=0
GROUP_EXISTED=0
getent passwd fulcrum >/dev/null && USER_EXISTED=1
getent group fulcrum >/dev/null && GROUP_EXISTED=1
# The processes of this test (fulcrum, fulcrum-upgrade): they have the
# test's directory on their command line.
test_pids() {
    local f pid cmd
    for f in /proc/[0-9]*/cmdline; do
        cmd=$({ tr '\0' ' ' <"$f"; } 2>/dev/null) || continue
        [[ $cmd == *"$TMP/"* ]] || continue
        pid=${f#/proc/}
        pid=${pid%/cmdline}
        [[ $(cat "/proc/$pid/comm" 2>/dev/null) == fulcrum* ]] && echo "$pid"
    done
    return 0
}
# The script's own output, for cleanup: a trap runs with the redirections
# of the command it interrupted (`... >"$TMP/upgrade.log"`).
exec 3>&1 4>&2

# A running fulcrum (an exited daemon stays a zombie until init reaps it).
is_fulcrum() {
    [ "$(cat "/proc/$1/comm" 2>/dev/null)" = fulcrum ] &&
        [ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)" != Z ]
}
gone() { ! is_fulcrum "$1"; }
cleanup() {
    local rc=$? pid
    trap - EXIT
    exec 1>&3 2>&4
    for pid in $(test_pids); do
        kill -INT "$pid" 2>/dev/null || true
    done
    for _ in $(seq 50); do
        [ -z "$(test_pids)" ] && break
        sleep 0.1
    done
    for pid in $(test_pids); do
        kill -KILL "$pid" 2>/dev/null || true
    done
    if [ "$INSTALLED" -eq 1 ]; then
        status=$(dpkg-query -W -f='${db:Status-Status}' fulcrum 2>/dev/null || true)
        if [ -n "$status" ] && [ "$status" != not-installed ]; then
            dpkg -P fulcrum >"$TMP/cleanup-purge.log" 2>&1 ||
                { echo "$PROG: cleanup: dpkg -P fulcrum failed:" >&2; cat "$TMP/cleanup-purge.log" >&2; }
        fi
        # None of these existed before (checked above).
        rm -rf /etc/fulcrum /var/log/fulcrum /run/fulcrum
    fi
    if [ "$USER_EXISTED" -eq 0 ] && getent passwd fulcrum >/dev/null; then
        userdel fulcrum || echo "$PROG: cleanup: could not delete the user fulcrum it created" >&2
    fi
    if [ "$GROUP_EXISTED" -eq 0 ] && getent group fulcrum >/dev/null; then
        groupdel fulcrum || echo "$PROG: cleanup: could not delete the group fulcrum it created" >&2
    fi
    if [ "$rc" -ne 0 ] && [ -f "$TMP/error.log" ]; then
        echo "$PROG: the test fulcrum's error log:" >&2
        tail -n 30 "$TMP/error.log" >&2
    fi
    rm -rf "$TMP"
    if [ "$rc" -eq 0 ]; then
        say "passed in $(($(date +%s) - STARTED)) s"
    else
        echo "$PROG: failed (status $rc); cleaned up" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# waits up to $1 tenths of a second for the command "${@:2}" to succeed
wait_for() {
    local n=$1
    shift
    for _ in $(seq "$n"); do
        "$@" && return 0
        sleep 0.1
    done
    "$@"
}

# --- Build -------------------------------------------------------------------

if ! cargo deb --version 2>/dev/null | grep -qx "cargo-deb $CARGO_DEB_VERSION"; then
    say "installing cargo-deb $CARGO_DEB_VERSION (cargo install; about 2 minutes on 2 cores)"
    cargo install --quiet --locked cargo-deb --version "$CARGO_DEB_VERSION"
fi
cd "$ROOT"
if [ "$BUILD" -eq 1 ]; then
    say "building the debug binary (cargo build; nothing to do after cargo test)"
    cargo build --quiet --bin fulcrum
fi
[ -x target/debug/fulcrum ] || fail "no target/debug/fulcrum (cargo build --bin fulcrum)"
# --profile dev --no-build: package target/debug/fulcrum as it is (cargo-deb
# warns that it is meant for release builds); --strip: 21 MB instead of
# 130 MB; --fast: lighter compression.
say "building the package (cargo deb --no-build --profile dev)"
cargo deb --no-build --profile dev --no-dbgsym --strip --fast --output "$TMP/deb/" \
    >"$TMP/cargo-deb.log" 2>&1 || { cat "$TMP/cargo-deb.log" >&2; fail "cargo deb failed"; }
DEB=$(find "$TMP/deb" -name 'fulcrum_*.deb' | head -n 1)
[ -n "$DEB" ] || fail "cargo deb made no .deb"
if [ -n "$KEEP_DEB" ]; then
    mkdir -p "$KEEP_DEB" && cp "$DEB" "$KEEP_DEB/"
fi
say "built $(basename "$DEB") ($(($(stat -c %s "$DEB") / 1024)) KiB): $(dpkg-deb -f "$DEB" Depends)"

# --- Install -----------------------------------------------------------------

INSTALLED=1
say "dpkg -i"
dpkg -i "$DEB" >"$TMP/dpkg-i.log" 2>&1 || { cat "$TMP/dpkg-i.log" >&2; fail "dpkg -i failed"; }
sed 's/^/  | /' "$TMP/dpkg-i.log"
[ "$(dpkg-query -W -f='${db:Status-Status}' fulcrum)" = installed ] || fail "fulcrum is not installed after dpkg -i"

check_file() { # path mode owner:group
    [ -f "$1" ] || fail "$1 is missing"
    local got
    got=$(stat -c '%a %U:%G' "$1")
    [ "$got" = "$2 $3" ] || fail "$1 is $got, expected $2 $3"
}
check_file /usr/sbin/fulcrum 755 root:root
check_file /usr/sbin/fulcrum-upgrade 755 root:root
check_file /usr/lib/systemd/system/fulcrum.service 644 root:root
check_file /usr/lib/sysusers.d/fulcrum.conf 644 root:root
check_file /etc/fulcrum/fulcrum.yaml 644 root:root
check_file /etc/logrotate.d/fulcrum 644 root:root
check_file /usr/share/man/man8/fulcrum.8.gz 644 root:root
check_file /usr/share/man/man8/fulcrum-upgrade.8.gz 644 root:root
for doc in README.md configuration.md behaviour.md operations.md migrating-from-nginx.md \
    copyright examples/machine1.yaml; do
    [ -f "/usr/share/doc/fulcrum/$doc" ] || fail "/usr/share/doc/fulcrum/$doc is missing"
done
conffiles=$(dpkg-query -W -f='${Conffiles}\n' fulcrum | awk 'NF { print $1 }' | sort | tr '\n' ' ')
[ "$conffiles" = "/etc/fulcrum/fulcrum.yaml /etc/logrotate.d/fulcrum " ] ||
    fail "conffiles are '$conffiles', expected /etc/fulcrum/fulcrum.yaml and /etc/logrotate.d/fulcrum"
# The unit runs what the package installed.
while read -r exe; do
    [ -x "$exe" ] || fail "fulcrum.service runs $exe, which the package did not install"
done < <(sed -n 's/^Exec[A-Za-z]*=-\{0,1\}\([^ ]*\).*/\1/p' /usr/lib/systemd/system/fulcrum.service)
grep -qx 'PIDFile=/run/fulcrum/fulcrum.pid' /usr/lib/systemd/system/fulcrum.service ||
    fail "fulcrum.service: PIDFile= is not /run/fulcrum/fulcrum.pid"
grep -qx 'pid_file: /run/fulcrum/fulcrum.pid' /etc/fulcrum/fulcrum.yaml ||
    fail "the packaged config's pid_file is not the unit's PIDFile="
if systemd-analyze --version >/dev/null 2>&1; then
    # Offline: checks the unit's syntax and that its programs exist.
    if ! systemd-analyze verify --man=no /usr/lib/systemd/system/fulcrum.service >"$TMP/verify.log" 2>&1 ||
        [ -s "$TMP/verify.log" ]; then
        cat "$TMP/verify.log" >&2
        fail "systemd-analyze verify fulcrum.service"
    fi
fi
getent passwd fulcrum | grep -q ':/nonexistent:/usr/sbin/nologin$' ||
    fail "no system user fulcrum with home /nonexistent and shell nologin: $(getent passwd fulcrum || echo none)"
getent group fulcrum >/dev/null || fail "no group fulcrum"
[ "$(stat -c '%a %U:%G' /var/log/fulcrum)" = "755 root:adm" ] ||
    fail "/var/log/fulcrum is $(stat -c '%a %U:%G' /var/log/fulcrum), expected 755 root:adm"
check_file /var/log/fulcrum/access.log 640 fulcrum:adm
[ -L /etc/systemd/system/multi-user.target.wants/fulcrum.service ] ||
    fail "fulcrum.service is not enabled (no multi-user.target.wants link)"
# The manual page renders without a warning.
man_warnings=$(MANWIDTH=80 man --warnings -l /usr/share/man/man8/fulcrum.8.gz 2>&1 >/dev/null)
[ -z "$man_warnings" ] || fail "fulcrum(8) renders with warnings: $man_warnings"
MANWIDTH=80 man -l /usr/share/man/man8/fulcrum.8.gz 2>/dev/null | grep -q 'SIGUSR1' ||
    fail "fulcrum(8) has no SIGUSR1"
MANWIDTH=80 man 8 fulcrum-upgrade 2>/dev/null | grep -q -- '--handover-timeout' ||
    fail "man fulcrum-upgrade does not show fulcrum(8)"
say "files, modes, conffiles, user, log directory, enabled unit, man page: ok"

out=$(/usr/sbin/fulcrum -t -c /etc/fulcrum/fulcrum.yaml 2>&1) ||
    { echo "$out" >&2; fail "the installed fulcrum -t rejects the packaged config"; }
say "/usr/sbin/fulcrum -t -c /etc/fulcrum/fulcrum.yaml: ${out##*$'\n'}"

# --- Run it as the unit would, on a loopback port ---------------------------

# The packaged config with its own port, pid file, upgrade socket and error
# log, and short grace periods; user, group and access_log as packaged.
PORT=$(free_port python3)
mkdir -m 0755 "$TMP/run"
CONF=$TMP/fulcrum.yaml
sed -e "s|^listen:.*|listen: [\"127.0.0.1:$PORT\"]|" \
    -e "s|^pid_file:.*|pid_file: $TMP/run/fulcrum.pid|" \
    -e "s|^upgrade_sock:.*|upgrade_sock: $TMP/run/upgrade.sock|" \
    -e "s|^grace_period_seconds:.*|grace_period_seconds: 1|" \
    -e "s|^graceful_shutdown_timeout_seconds:.*|graceful_shutdown_timeout_seconds: 1|" \
    /etc/fulcrum/fulcrum.yaml >"$CONF"
# The error log in a file, for this script to show when it fails; a file of
# the user's, so that SIGUSR1 can reopen it after the switch. (The form
# `error_log: PATH` or, in a later binary, `error_log: {path: PATH}`.)
install -o fulcrum -g adm -m 0640 /dev/null "$TMP/error.log"
for form in "error_log: $TMP/error.log" "error_log: { path: $TMP/error.log }"; do
    cp "$CONF" "$CONF.try"
    echo "$form" >>"$CONF.try"
    if /usr/sbin/fulcrum -t -c "$CONF.try" >/dev/null 2>&1; then
        mv "$CONF.try" "$CONF"
        break
    fi
done
rm -f "$CONF.try"
for want in "127.0.0.1:$PORT" "pid_file: $TMP/run/fulcrum.pid" "upgrade_sock: $TMP/run/upgrade.sock" \
    "grace_period_seconds: 1" "access_log: /var/log/fulcrum/access.log" "user: fulcrum"; do
    grep -qF "$want" "$CONF" || fail "the test config lacks '$want' (did the packaged config change?)"
done
PID_FILE=$TMP/run/fulcrum.pid
ACCESS=/var/log/fulcrum/access.log

# The unit's capabilities (CapabilityBoundingSet=) and NoNewPrivileges, for
# root before the switch of user.
caps=$(sed -n 's/^CapabilityBoundingSet=//p' /usr/lib/systemd/system/fulcrum.service |
    tr '[:upper:]' '[:lower:]' | sed 's/cap_/+/g; s/ /,/g')
[ -n "$caps" ] || fail "fulcrum.service has no CapabilityBoundingSet="
as_unit() { setpriv --no-new-privs --inh-caps=-all --bounding-set="-all,$caps" "$@"; }

running_pid() { # the pid in the pid file, if it is a running fulcrum
    local pid
    pid=$(cat "$PID_FILE" 2>/dev/null) || return 1
    is_fulcrum "$pid" || return 1
    echo "$pid"
}
health() { [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$PORT/health")" = 200 ]; }
logged() { grep -qF "$2" "$1" 2>/dev/null; }

say "starting /usr/sbin/fulcrum -d on 127.0.0.1:$PORT (as root with the unit's capabilities: $caps)"
# Its stdout and stderr to a file: a daemon keeps the ones it was given, and
# this script's output may be a pipe that its reader waits on.
as_unit /usr/sbin/fulcrum -d -c "$CONF" >"$TMP/daemon.out" 2>&1 ||
    { rc=$?; cat "$TMP/daemon.out" >&2; fail "fulcrum -d exited with status $rc"; }
wait_for 100 running_pid >/dev/null || fail "no running fulcrum in $PID_FILE"
PID=$(running_pid)
wait_for 50 health || fail "GET /health on 127.0.0.1:$PORT does not answer 200"
uid=$(awk '/^Uid:/ { print $2 }' "/proc/$PID/status")
[ "$uid" = "$(id -u fulcrum)" ] || fail "the daemon runs as uid $uid, not as the user fulcrum"
curl -s -o /dev/null --max-time 5 "http://127.0.0.1:$PORT/package-test/1" || true
wait_for 30 logged "$ACCESS" '/package-test/1' || fail "no access log line in $ACCESS for /package-test/1"
say "pid $PID runs as the user fulcrum; /health answers 200; $ACCESS has the request's line"

# logrotate with the packaged snippet, pointed at this test's pid file: it
# moves access.log, creates a new one (fulcrum:adm 0640) and sends SIGUSR1.
sed "s|/run/fulcrum/fulcrum.pid|$PID_FILE|g" /etc/logrotate.d/fulcrum >"$TMP/logrotate.conf"
grep -qF "$PID_FILE" "$TMP/logrotate.conf" || fail "the logrotate snippet does not read /run/fulcrum/fulcrum.pid"
logrotate -f -s "$TMP/logrotate.state" "$TMP/logrotate.conf" >"$TMP/logrotate.log" 2>&1 ||
    { cat "$TMP/logrotate.log" >&2; fail "logrotate failed"; }
logged "$ACCESS.1" '/package-test/1' || fail "logrotate did not move $ACCESS to $ACCESS.1"
check_file "$ACCESS" 640 fulcrum:adm
sleep 0.5
is_fulcrum "$PID" ||
    fail "fulcrum (pid $PID) exited on SIGUSR1 from logrotate's postrotate: this binary does not reopen its log on SIGUSR1"
curl -s -o /dev/null --max-time 5 "http://127.0.0.1:$PORT/package-test/2" || true
wait_for 30 logged "$ACCESS" '/package-test/2' ||
    fail "after logrotate and SIGUSR1 the new request's line is not in the new $ACCESS (in access.log.1: $(grep -c /package-test/2 "$ACCESS.1"))"
# And a plain SIGUSR1, as an operator would send it.
kill -USR1 "$PID"
sleep 0.5
is_fulcrum "$PID" || fail "fulcrum (pid $PID) exited on SIGUSR1"
say "logrotate moved the log and sent SIGUSR1: fulcrum still runs and writes to the new $ACCESS"

# A graceful upgrade with the installed fulcrum-upgrade, as the unit's
# ExecReload runs it: the new process (root, the unit's capabilities) opens
# the access log that now belongs to fulcrum, then switches user.
say "upgrading with /usr/sbin/fulcrum-upgrade (as ExecReload=)"
as_unit /usr/sbin/fulcrum-upgrade --config "$CONF" >"$TMP/upgrade.log" 2>&1 ||
    { cat "$TMP/upgrade.log" >&2; fail "fulcrum-upgrade failed"; }
sed 's/^/  | /' "$TMP/upgrade.log"
NEW=$(running_pid) || fail "no running fulcrum in $PID_FILE after the upgrade"
[ "$NEW" != "$PID" ] || fail "the pid file still names the old process $PID"
! is_fulcrum "$PID" || fail "the old process $PID still runs"
uid=$(awk '/^Uid:/ { print $2 }' "/proc/$NEW/status")
[ "$uid" = "$(id -u fulcrum)" ] || fail "the new daemon runs as uid $uid, not as the user fulcrum"
curl -s -o /dev/null --max-time 5 "http://127.0.0.1:$PORT/package-test/3" || true
wait_for 30 logged "$ACCESS" '/package-test/3' || fail "the upgraded process writes no line to $ACCESS"
PID=$NEW

say "stopping pid $PID (SIGTERM: graceful stop)"
kill -TERM "$PID"
wait_for 150 gone "$PID" ||
    fail "fulcrum (pid $PID) still runs 15 s after SIGTERM"

# --- postinst with an invalid config -----------------------------------------

cp /etc/fulcrum/fulcrum.yaml "$TMP/fulcrum.yaml.packaged"
echo "package_test_unknown_key: 1" >>/etc/fulcrum/fulcrum.yaml
say "dpkg -i again with an invalid /etc/fulcrum/fulcrum.yaml: must fail and say why"
if dpkg -i "$DEB" >"$TMP/dpkg-bad.log" 2>&1; then
    cat "$TMP/dpkg-bad.log" >&2
    fail "dpkg -i succeeded with an invalid config"
fi
grep -q 'package_test_unknown_key' "$TMP/dpkg-bad.log" ||
    { cat "$TMP/dpkg-bad.log" >&2; fail "postinst did not print the config's error"; }
grep -E 'package_test_unknown_key|dpkg --configure' "$TMP/dpkg-bad.log" | sed 's/^/  | /'
[ "$(dpkg-query -W -f='${db:Status-Status}' fulcrum)" = half-configured ] ||
    fail "the package is $(dpkg-query -W -f='${db:Status-Status}' fulcrum), expected half-configured"
cp "$TMP/fulcrum.yaml.packaged" /etc/fulcrum/fulcrum.yaml
dpkg --configure fulcrum >"$TMP/dpkg-configure.log" 2>&1 ||
    { cat "$TMP/dpkg-configure.log" >&2; fail "dpkg --configure fulcrum failed with the config fixed"; }
say "postinst refused the invalid config; dpkg --configure fulcrum passed once it was fixed"

# --- Remove, then purge ------------------------------------------------------

echo "# edited by package-test.sh" >>/etc/fulcrum/fulcrum.yaml
say "dpkg -r fulcrum"
dpkg -r fulcrum >"$TMP/dpkg-r.log" 2>&1 || { cat "$TMP/dpkg-r.log" >&2; fail "dpkg -r failed"; }
for p in /usr/sbin/fulcrum /usr/sbin/fulcrum-upgrade /usr/lib/systemd/system/fulcrum.service \
    /usr/lib/sysusers.d/fulcrum.conf /usr/share/man/man8/fulcrum.8.gz \
    /usr/share/man/man8/fulcrum-upgrade.8.gz /usr/share/doc/fulcrum; do
    [ ! -e "$p" ] || fail "$p is still there after dpkg -r"
done
grep -qx '# edited by package-test.sh' /etc/fulcrum/fulcrum.yaml 2>/dev/null ||
    fail "dpkg -r did not keep the edited /etc/fulcrum/fulcrum.yaml"
[ "$(dpkg-query -W -f='${db:Status-Status}' fulcrum)" = config-files ] ||
    fail "after dpkg -r the package is $(dpkg-query -W -f='${db:Status-Status}' fulcrum), expected config-files"
say "removed: binary, unit, man page and docs gone; the edited /etc/fulcrum/fulcrum.yaml kept"

say "dpkg -P fulcrum"
dpkg -P fulcrum >"$TMP/dpkg-p.log" 2>&1 || { cat "$TMP/dpkg-p.log" >&2; fail "dpkg -P failed"; }
for p in /etc/fulcrum /etc/logrotate.d/fulcrum /var/log/fulcrum /run/fulcrum \
    /etc/systemd/system/multi-user.target.wants/fulcrum.service; do
    if [ -e "$p" ] || [ -L "$p" ]; then fail "$p is still there after dpkg -P"; fi
done
leftover=$(find /var/lib/systemd/deb-systemd-helper-enabled -name '*fulcrum*' 2>/dev/null | head -n 1)
[ -z "$leftover" ] || fail "$leftover is still there after dpkg -P"
status=$(dpkg-query -W -f='${db:Status-Status}' fulcrum 2>/dev/null || true)
[ -z "$status" ] || [ "$status" = not-installed ] || fail "after dpkg -P the package is $status"
getent passwd fulcrum >/dev/null || fail "dpkg -P removed the user fulcrum (Debian keeps system users)"
say "purged: config, logrotate snippet, logs and the unit's enabled state gone; the user fulcrum stays, as Debian keeps system users (this test removes it if it created it)"
