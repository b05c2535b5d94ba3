//! TCP settings that let a request on an established (pooled) upstream
//! connection notice a vanished machine within about `connect_timeout`,
//! instead of waiting for `read_timeout`.
//!
//! A blackholed peer never ACKs the request. TCP_USER_TIMEOUT aborts a
//! connection whose data stays unacknowledged that long, but the kernel only
//! checks it from its first retransmission timeout on, and with the default
//! minimum RTO (200ms, after a tail-loss probe) that comes ~420ms after the
//! write. Lowering the connection's minimum RTO (TCP_RTO_MIN_US, Linux 6.15+)
//! brings the abort to about `user_timeout` + 3 × RTO. A slow but alive
//! server still ACKs at the TCP level (at once for a retransmission), so it
//! is not affected; an early retransmission on a LAN costs one small packet.
//!
//! One alive server is affected: one that stops reading while a request
//! body arrives (a busy worker, an upload read at a disk's pace) shuts its
//! receive window, and Linux aborts a connection whose window stays shut
//! past the user timeout too (`tcp_probe_timer`). A request that has
//! written more than [`PATIENT_AFTER`] bytes has the user timeout lifted
//! until it ends: only a large body can fill a server's window, and for it
//! the pool's `write_timeout` applies, as nginx's `proxy_send_timeout`.

use log::info;
use pingora::protocols::TcpKeepalive;
use std::os::unix::io::RawFd;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

/// `TCP_RTO_MIN_US` from linux/tcp.h (not yet in the libc crate).
const TCP_RTO_MIN_US: libc::c_int = 45;

/// Keepalive and user timeout for upstream connections: data left
/// unacknowledged for 40% of `connect_timeout` (at least 100ms) aborts the
/// connection, and keepalive probes retire idle pooled connections to a
/// vanished server.
pub fn dead_peer_detection(connect_timeout: Duration) -> TcpKeepalive {
    TcpKeepalive {
        idle: Duration::from_secs(5),
        interval: Duration::from_secs(1),
        count: 3,
        user_timeout: user_timeout(connect_timeout),
    }
}

/// Request bytes (head and body) past which the user timeout is lifted for
/// the rest of the request: below a server's smallest usual receive window
/// (64 KiB on Linux by default), so that a body that may fill one never
/// meets it.
pub const PATIENT_AFTER: usize = 16 * 1024;

/// Lifts the user timeout of a connection (`None`), or sets it back for
/// its `connect_timeout`.
pub fn set_user_timeout(fd: RawFd, connect_timeout: Option<Duration>) -> std::io::Result<()> {
    let ms = connect_timeout.map_or(0, |c| user_timeout(c).as_millis());
    let ms = libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX);
    set_int_option(fd, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, ms)
}

fn user_timeout(connect_timeout: Duration) -> Duration {
    (connect_timeout * 2 / 5).max(Duration::from_millis(100))
}

/// Minimum RTO for a connection with this `connect_timeout`: a tenth of it,
/// between 20ms and the kernel's default of 200ms, so that the abort lands
/// within `connect_timeout` (40% of it for the user timeout, ~3 RTOs and
/// the scheduling of the retry).
pub fn min_rto(connect_timeout: Duration) -> Duration {
    (connect_timeout / 10).clamp(Duration::from_millis(20), Duration::from_millis(200))
}

/// Applies [`min_rto`] to a freshly connected upstream socket. On a kernel
/// without TCP_RTO_MIN_US this says so once and leaves the default, so a
/// blackholed pooled connection then costs ~420ms + user timeout.
pub fn shorten_min_rto(fd: RawFd, connect_timeout: Duration) {
    static UNSUPPORTED: AtomicBool = AtomicBool::new(false);
    if UNSUPPORTED.load(Relaxed) {
        return;
    }
    let us = min_rto(connect_timeout).as_micros() as libc::c_int;
    if let Err(err) = set_int_option(fd, libc::IPPROTO_TCP, TCP_RTO_MIN_US, us) {
        if err.raw_os_error() == Some(libc::ENOPROTOOPT) && !UNSUPPORTED.swap(true, Relaxed) {
            info!(
                "kernel lacks TCP_RTO_MIN_US (Linux 6.15+): a silent pooled upstream \
                 connection is detected ~420ms after the user timeout"
            );
        }
    }
}

/// `setsockopt` with an int value.
pub fn set_int_option(
    fd: RawFd,
    level: libc::c_int,
    option: libc::c_int,
    value: libc::c_int,
) -> std::io::Result<()> {
    // SAFETY: the value is a c_int whose size is passed along; a bad fd or
    // option is reported as an error, not undefined behaviour.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_abort_fits_within_connect_timeout() {
        for ms in [300u64, 1000, 5000, 60_000] {
            let c = Duration::from_millis(ms);
            let abort = user_timeout(c) + 3 * min_rto(c);
            assert!(abort < c, "{c:?}: {abort:?}");
        }
        assert_eq!(
            min_rto(Duration::from_millis(300)),
            Duration::from_millis(30)
        );
        assert_eq!(min_rto(Duration::from_secs(60)), Duration::from_millis(200));
    }
}
