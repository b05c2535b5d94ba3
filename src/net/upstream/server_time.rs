//! How long a server took to answer as the kernel saw it: from fulcrum's
//! last write of the request to the arrival of the answer's first bytes
//! (the socket's receive timestamp, `SO_TIMESTAMPNS`). `ewma` compares
//! servers by this, so that time fulcrum's own worker spent elsewhere (on a
//! backlog of other requests while saturated, or descheduled) does not
//! count against whichever server was answering then, which is mostly the
//! fast one.
//!
//! Asking for stamps on one socket makes the kernel stamp every packet it
//! receives (one clock read each) while any socket wants them.

use super::tcp;
use std::io;
use std::mem::MaybeUninit;
use std::os::unix::io::RawFd;

/// Asks the kernel to stamp data arriving on `fd`; false if it refused
/// (then the attempt's own clock is used).
pub fn enable(fd: RawFd) -> bool {
    tcp::set_int_option(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1).is_ok()
}

/// Now on the clock of the receive timestamps (CLOCK_REALTIME), in ns.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    nanos(&ts)
}

fn nanos(ts: &libc::timespec) -> u64 {
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// One `recvmsg` into `buf`: the bytes read and, when the kernel gave
/// one, the arrival time of the data read (ns, CLOCK_REALTIME).
pub fn recv(fd: RawFd, buf: &mut [MaybeUninit<u8>]) -> io::Result<(usize, Option<u64>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Room for one timespec control message, aligned for cmsghdr.
    let mut control = [0u64; 8];
    // SAFETY: an all-zero msghdr is valid; the pointers set below outlive
    // the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: msg describes buffers we own; recvmsg writes at most their sizes.
    let n = unsafe { libc::recvmsg(fd, &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut stamp = None;
    // SAFETY: the CMSG_* macros walk the control buffer the kernel filled,
    // within msg_controllen; the timestamp is read unaligned.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                stamp = Some(nanos(&ts));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n as usize, stamp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::os::unix::io::AsRawFd;
    use std::time::Duration;

    /// Data read late still carries the time it arrived.
    #[test]
    fn the_stamp_is_the_arrival_not_the_read() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        assert!(enable(client.as_raw_fd()));
        let mut buf = [MaybeUninit::<u8>::uninit(); 64];
        // The first socket to ask turns stamping on for the whole system,
        // which the kernel does from a work queue, moments later (until
        // then data arrives unstamped and the caller uses its own clock).
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        loop {
            server.write_all(b"w").unwrap();
            std::thread::sleep(Duration::from_millis(5));
            if recv(client.as_raw_fd(), &mut buf).unwrap().1.is_some() {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "never stamped");
        }

        let sent = now_ns();
        server.write_all(b"answer").unwrap();
        std::thread::sleep(Duration::from_millis(200)); // the reader is busy elsewhere
        let (n, stamp) = recv(client.as_raw_fd(), &mut buf).unwrap();
        let read = now_ns();
        assert_eq!(n, 6);
        let stamp = stamp.expect("a receive timestamp");
        assert!(stamp >= sent, "stamped before the write");
        assert!(
            stamp - sent < 100_000_000,
            "stamped {} ms after the write, read {} ms after",
            (stamp - sent) / 1_000_000,
            (read - sent) / 1_000_000
        );

        // Without the option: no stamp, the bytes all the same.
        let plain = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut s2, _) = listener.accept().unwrap();
        s2.write_all(b"x").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let (n, stamp) = recv(plain.as_raw_fd(), &mut buf).unwrap();
        assert_eq!((n, stamp), (1, None));
    }
}
