//! Control-plane bytes from the peer of a QUIC stream: what a balancer's `NodeSession` reads
//! from a node and what a node's `BalancerSession` reads from a balancer, both through
//! `control::FrameDecoder` (u32 length + JSON), in pieces. Neither may panic; a session that
//! says the stream is bad is dropped, as the drivers do. Every message decoded must come back
//! the same through `encode_frame`, and a decoder never holds more than one frame.
#![no_main]
use control::client_session::BalancerSession;
use control::server_session::NodeSession;
use control::{encode_frame, ControlError, FrameDecoder, ToBalancer, ToNode, MAX_FRAME};
use libfuzzer_sys::fuzz_target;
use std::time::Duration;
use tokio::time::Instant;

fn round_trip<T>(msg: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let frame = match encode_frame(msg) {
        Ok(f) => f,
        // JSON may grow when re-encoded (`1e5` becomes `100000.0`); the limit is what it is.
        Err(ControlError::FrameTooLarge { .. }) => return,
        Err(e) => panic!("a decoded message does not encode: {e}"),
    };
    let mut d = FrameDecoder::new();
    d.push(&frame);
    let back: T = match d.next() {
        Ok(Some(m)) => m,
        other => panic!("re-encoded message does not decode: {other:?}"),
    };
    assert_eq!(&back, msg);
    assert_eq!(d.buffered(), 0);
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let piece = usize::from(flags >> 1).max(1);
    let now = Instant::now();
    let mut from_node = Some(NodeSession::new("node-1", now));
    let mut from_balancer = Some(BalancerSession::new(Duration::from_secs(1), now, None));
    let mut raw = Some(FrameDecoder::new());
    for p in rest.chunks(piece) {
        if let Some(s) = from_node.as_mut() {
            s.handle_bytes(p);
            loop {
                match s.poll_inbound() {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => {
                        from_node = None;
                        break;
                    }
                }
            }
        }
        if let Some(s) = from_balancer.as_mut() {
            s.handle_bytes(p);
            loop {
                match s.poll_message() {
                    Ok(Some(m)) => round_trip::<ToNode>(&m),
                    Ok(None) => break,
                    Err(_) => {
                        from_balancer = None;
                        break;
                    }
                }
            }
        }
        if let Some(d) = raw.as_mut() {
            d.push(p);
            loop {
                match d.next::<ToBalancer>() {
                    Ok(Some(m)) => round_trip(&m),
                    Ok(None) => {
                        assert!(d.buffered() < 4 + MAX_FRAME);
                        break;
                    }
                    // Bad JSON is consumed; the bit 0 flag decides whether we go on past it.
                    Err(ControlError::Json(_)) if flags & 1 != 0 => {}
                    Err(_) => {
                        raw = None;
                        break;
                    }
                }
            }
        }
    }
});
