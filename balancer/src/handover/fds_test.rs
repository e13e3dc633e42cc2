use super::*;
use std::io::Write;

#[test]
fn frames_carry_bodies_and_descriptors() {
    let (a, mut b) = UnixStream::pair().unwrap();
    let (mut p1, p2) = UnixStream::pair().unwrap();
    send(&a, b"hello", &[p2.as_raw_fd()]).unwrap();
    // Larger than the socket buffer: sent from another thread while we read.
    let sender = std::thread::spawn(move || {
        send(&a, &vec![7u8; 300_000], &[]).unwrap();
        a
    });
    let (body, fds) = recv(&mut b).unwrap().unwrap();
    assert_eq!(body, b"hello");
    assert_eq!(fds.len(), 1);
    // The received descriptor is the same socket: bytes written to it reach p1.
    let mut dup = UnixStream::from(fds.into_iter().next().unwrap());
    dup.write_all(b"x").unwrap();
    let mut one = [0u8; 1];
    p1.read_exact(&mut one).unwrap();
    assert_eq!(&one, b"x");
    let (body, fds) = recv(&mut b).unwrap().unwrap();
    assert_eq!(body.len(), 300_000);
    assert!(fds.is_empty());
    drop(sender.join().unwrap());
    assert!(recv(&mut b).unwrap().is_none());
}

#[test]
fn a_lying_or_truncated_peer_is_an_error() {
    let (mut a, mut b) = UnixStream::pair().unwrap();
    // Announces 2 descriptors, carries none.
    a.write_all(&[0, 0, 0, 1, 0, 2, b'x']).unwrap();
    assert!(recv(&mut b).is_err());
    let (mut a, mut b) = UnixStream::pair().unwrap();
    a.write_all(&[0xff, 0xff, 0xff, 0xff, 0, 0]).unwrap();
    assert!(recv(&mut b).is_err());
    let (mut a, mut b) = UnixStream::pair().unwrap();
    a.write_all(&[0, 0, 0, 9, 0, 0, 1]).unwrap();
    drop(a);
    assert!(recv(&mut b).is_err());
}
