//! systemd's readiness protocol (`sd_notify(3)`), for a unit with
//! `Type=notify`: when systemd starts fulcrum (or runs `ExecReload=`) with
//! `NOTIFY_SOCKET` in the environment, fulcrum tells it
//!
//! - `READY=1`, `MAINPID=<pid>` and a `STATUS=` line once its listeners
//!   serve: at start, and in the process that took the listening sockets
//!   over in an upgrade (`fulcrum -u`), which is how systemd learns the new
//!   main process (the unit needs `NotifyAccess=all`: that process is not the
//!   main process when it says so);
//! - `RELOADING=1` (with `MONOTONIC_USEC=`, which systemd 253 and later
//!   want and older ones ignore) when a SIGHUP reload starts, and `READY=1`
//!   when it is done, applied or not;
//! - `STOPPING=1` when a graceful stop (SIGTERM) or the hand-over of the
//!   sockets to a new process (SIGQUIT) starts.
//!
//! Without `NOTIFY_SOCKET` (no systemd, or `Type=forking`) nothing is sent.
//! A message is one datagram to the unix socket the variable names (a path,
//! or an abstract name after `@`), as libsystemd's `sd_notify` sends it.
//!
//! Under `-d` the messages come from the daemon, never from the process
//! systemd started, which exits once the daemon is ready: with
//! `NOTIFY_SOCKET` set, that first process waits (Pingora's
//! `daemon_wait_for_ready`) until the daemon has sent `MAINPID=` and
//! `READY=1` and signalled it ([`wait_for_daemon`], [`serving`]), so that
//! systemd hears of the new main process before the one it started exits.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

/// The environment variable systemd sets.
const ENV: &str = "NOTIFY_SOCKET";

/// The process systemd started, when it waits for its daemon: its pid and
/// start time (so that a pid reused since is never signalled).
static WAITING_PARENT: Mutex<Option<(u32, u64)>> = Mutex::new(None);
/// A failed send was logged already.
static WARNED: AtomicBool = AtomicBool::new(false);

/// Whether systemd listens for notifications.
pub(crate) fn enabled() -> bool {
    std::env::var_os(ENV).is_some_and(|v| !v.is_empty())
}

/// Sends `state` (`KEY=VALUE` lines) to systemd if it listens. Returns
/// whether it was sent; a failure is logged once.
pub(crate) fn notify(state: &str) -> bool {
    let Some(socket) = std::env::var_os(ENV) else {
        return false;
    };
    let socket = socket.to_string_lossy();
    if socket.is_empty() {
        return false;
    }
    match send(&socket, state) {
        Ok(()) => true,
        Err(e) => {
            if !WARNED.swap(true, Relaxed) {
                log::warn!("cannot notify systemd through {ENV}={socket}: {e}");
            }
            false
        }
    }
}

/// One datagram with `state` to `socket`: a file system path, or an
/// abstract socket name after `@` (as systemd writes it).
pub(crate) fn send(socket: &str, state: &str) -> io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    let sent = if let Some(name) = socket.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        sock.send_to_addr(state.as_bytes(), &addr)?
    } else if socket.starts_with('/') {
        sock.send_to(state.as_bytes(), socket)?
    } else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "neither an absolute path nor an abstract name (@...)",
        ));
    };
    if sent != state.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("sent {sent} of {} bytes", state.len()),
        ));
    }
    Ok(())
}

/// A `STATUS=` value on one line.
fn status_line(status: &str) -> String {
    status.replace(['\n', '\r'], " ")
}

/// `READY=1` with our pid as the main process: the listeners serve.
fn ready_message(pid: u32, status: &str) -> String {
    format!("READY=1\nMAINPID={pid}\nSTATUS={}", status_line(status))
}

/// `RELOADING=1` as systemd 253+ wants it: with the monotonic clock (µs).
fn reloading_message(monotonic_usec: u64, status: &str) -> String {
    format!(
        "RELOADING=1\nMONOTONIC_USEC={monotonic_usec}\nSTATUS={}",
        status_line(status)
    )
}

fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// A process's state letter and start time (clock ticks after boot), from
/// `/proc/PID/stat`.
fn proc_state(pid: u32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command, which may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    // Field 22 of stat(5); `rest` starts at field 3.
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

/// Under `-d` with systemd listening: the process systemd started waits
/// for its daemon to be ready before it exits (else systemd, seeing its
/// main process exit before `READY=1`, would fail the start). Call before
/// Pingora daemonizes, in the process that will be the parent.
pub(crate) fn wait_for_daemon(server: &mut pingora::server::configuration::ServerConf) {
    if !enabled() {
        return;
    }
    let me = std::process::id();
    let Some((_, start)) = proc_state(me) else {
        log::warn!("cannot read /proc/self/stat: the first process exits at once under -d");
        return;
    };
    server.daemon_wait_for_ready = true;
    *WAITING_PARENT.lock().unwrap_or_else(|e| e.into_inner()) = Some((me, start));
}

/// How often, and how far apart, a waiting parent is signalled: it may not
/// listen for SIGUSR1 yet when the daemon is ready (a signal that comes
/// before is lost to it).
const PARENT_TRIES: u32 = 100;
const PARENT_RETRY: Duration = Duration::from_millis(100);

/// The listeners serve: tells systemd (`READY=1`, `MAINPID=`, `STATUS=`),
/// then releases a parent that waits for this daemon ([`wait_for_daemon`]).
pub(crate) fn serving(status: &str) {
    let me = std::process::id();
    if notify(&ready_message(me, status)) {
        log::info!("told systemd: ready, main process {me}");
    }
    let parent = WAITING_PARENT
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    let Some((parent, start)) = parent else {
        return;
    };
    if parent == me {
        return;
    }
    // Pingora's parent (daemon_wait_for_ready) exits 0 on SIGUSR1; it runs
    // as our user by now. Signalled until it has gone, and only while the
    // pid is still that process.
    let released = std::thread::Builder::new()
        .name("notify-parent".into())
        .spawn(move || {
            for _ in 0..PARENT_TRIES {
                match proc_state(parent) {
                    Some((state, s)) if s == start && state != 'Z' => {}
                    _ => return,
                }
                // SAFETY: kill(2) with a pid and a signal number.
                if unsafe { libc::kill(parent as libc::pid_t, libc::SIGUSR1) } != 0 {
                    let e = io::Error::last_os_error();
                    // EPERM: it may not have changed to our user yet (one
                    // systemd upgrade in a full test run met this); the
                    // next try will tell.
                    if e.raw_os_error() != Some(libc::EPERM) {
                        log::warn!(
                            "cannot tell the starting process {parent} that the daemon is ready: {e}"
                        );
                        return;
                    }
                }
                std::thread::sleep(PARENT_RETRY);
            }
            log::warn!("the starting process {parent} did not exit on SIGUSR1");
        });
    if let Err(e) = released {
        log::warn!("cannot release the starting process {parent}: {e}");
    }
}

/// A SIGHUP reload starts.
pub(crate) fn reloading(status: &str) {
    notify(&reloading_message(monotonic_usec(), status));
}

/// A SIGHUP reload is over (applied or not): serving again.
pub(crate) fn reloaded(status: &str) {
    notify(&format!("READY=1\nSTATUS={}", status_line(status)));
}

/// A graceful stop or a hand-over to a new process starts.
pub(crate) fn stopping(status: &str) {
    notify(&format!("STOPPING=1\nSTATUS={}", status_line(status)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn receive(sock: &UnixDatagram) -> String {
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn sends_to_a_socket_path() {
        let dir = std::env::temp_dir().join(format!("fulcrum-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let sock = UnixDatagram::bind(&path).unwrap();
        send(path.to_str().unwrap(), &ready_message(42, "serving on a")).unwrap();
        assert_eq!(receive(&sock), "READY=1\nMAINPID=42\nSTATUS=serving on a");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("fulcrum-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).unwrap();
        send(&format!("@{name}"), "STOPPING=1\nSTATUS=x").unwrap();
        assert_eq!(receive(&sock), "STOPPING=1\nSTATUS=x");
    }

    #[test]
    fn refuses_a_relative_path_and_reports_a_missing_socket() {
        assert_eq!(
            send("notify.sock", "READY=1").unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert!(send("/nonexistent-dir/notify.sock", "READY=1").is_err());
    }

    #[test]
    fn reads_a_process_state_and_start_time() {
        let (state, start) = proc_state(std::process::id()).unwrap();
        assert!(state == 'R' || state == 'S', "{state}");
        assert!(start > 0);
        assert_eq!(proc_state(std::process::id()).unwrap().1, start);
        assert!(proc_state(u32::MAX).is_none());
    }

    #[test]
    fn messages() {
        assert_eq!(
            reloading_message(1234, "reloading\n/etc/f.yaml"),
            "RELOADING=1\nMONOTONIC_USEC=1234\nSTATUS=reloading /etc/f.yaml"
        );
        let a = monotonic_usec();
        std::thread::sleep(Duration::from_millis(2));
        assert!(monotonic_usec() >= a + 1000);
    }
}
