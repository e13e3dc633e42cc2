//! Frames with file descriptors over a Unix stream socket: `u32` big-endian body length,
//! `u16` count of descriptors, then the JSON body; the descriptors ride on the frame's first
//! bytes as `SCM_RIGHTS`. Blocking: the hand-over runs its protocol on a thread of its own.
//!
//! The receiver reads the 6-byte head with `recvmsg` (Linux never merges bytes that carry
//! descriptors with bytes that came before them, so the descriptors arrive with the head),
//! then the body with plain reads.

use std::{
    io::{IoSlice, IoSliceMut, Read},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::net::UnixStream,
    },
};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

/// Largest frame body: a snapshot of a few thousand nodes' reports, or one connection's state
/// (a few KiB), fits many times; a broken peer cannot make us buffer more.
pub const MAX_BODY: usize = 64 * 1024 * 1024;
/// Descriptors per frame: Linux refuses more than 253 in one `SCM_RIGHTS` message.
pub const MAX_FDS: usize = 250;
const HEAD: usize = 6;

fn io_err(e: nix::Error) -> std::io::Error {
    std::io::Error::from_raw_os_error(e as i32)
}

/// Send one frame carrying `fds` (which stay open here: the receiver gets duplicates).
pub fn send(sock: &UnixStream, body: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
    if body.len() > MAX_BODY || fds.len() > MAX_FDS {
        return Err(std::io::Error::other(format!(
            "frame too large: {} bytes, {} descriptors",
            body.len(),
            fds.len()
        )));
    }
    let mut head = [0u8; HEAD];
    head[..4].copy_from_slice(&(body.len() as u32).to_be_bytes());
    head[4..].copy_from_slice(&(fds.len() as u16).to_be_bytes());
    let mut frame = Vec::with_capacity(HEAD + body.len());
    frame.extend_from_slice(&head);
    frame.extend_from_slice(body);
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    let mut sent = loop {
        match sendmsg::<()>(
            sock.as_raw_fd(),
            &[IoSlice::new(&frame)],
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(n) => break n,
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(io_err(e)),
        }
    };
    // The descriptors went with the first bytes; the rest is plain data.
    while sent < frame.len() {
        match sendmsg::<()>(
            sock.as_raw_fd(),
            &[IoSlice::new(frame.get(sent..).unwrap_or_default())],
            &[],
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => sent += n,
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(io_err(e)),
        }
    }
    Ok(())
}

/// Receive one frame: its body and the descriptors it carried (owned: closed on drop).
/// `Ok(None)` when the peer closed the connection between frames.
pub fn recv(sock: &mut UnixStream) -> std::io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    let mut head = [0u8; HEAD];
    let mut fds: Vec<OwnedFd> = Vec::new();
    let mut got = 0usize;
    let mut cmsg_space = nix::cmsg_space!([RawFd; MAX_FDS]);
    while got < HEAD {
        let (n, received) = {
            let mut iov = [IoSliceMut::new(head.get_mut(got..).unwrap_or_default())];
            let msg = loop {
                match recvmsg::<()>(
                    sock.as_raw_fd(),
                    &mut iov,
                    Some(&mut cmsg_space),
                    MsgFlags::MSG_CMSG_CLOEXEC,
                ) {
                    Ok(m) => break m,
                    Err(nix::Error::EINTR) => continue,
                    Err(e) => return Err(io_err(e)),
                }
            };
            let mut received = Vec::new();
            for c in msg.cmsgs().map_err(io_err)? {
                if let ControlMessageOwned::ScmRights(raw) = c {
                    // SAFETY: the kernel just created these descriptors for us; nobody else
                    // owns them.
                    received.extend(
                        raw.into_iter()
                            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                    );
                }
            }
            (msg.bytes, received)
        };
        fds.extend(received);
        if n == 0 {
            if got == 0 && fds.is_empty() {
                return Ok(None);
            }
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got += n;
    }
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let want_fds = u16::from_be_bytes([head[4], head[5]]) as usize;
    if len > MAX_BODY {
        return Err(std::io::Error::other(format!(
            "frame of {len} bytes is too large"
        )));
    }
    if fds.len() != want_fds {
        return Err(std::io::Error::other(format!(
            "frame announced {want_fds} descriptors, {} arrived",
            fds.len()
        )));
    }
    let mut body = vec![0u8; len];
    sock.read_exact(&mut body)?;
    Ok(Some((body, fds)))
}

#[cfg(test)]
#[path = "fds_test.rs"]
mod tests;
