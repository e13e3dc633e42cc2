//! Unit tests of `rtmps` (kept beside it; compiled only for tests).

use super::*;

#[test]
fn a_hop_is_known_by_its_address_in_either_family() {
    let hops = Hops::default();
    let v4: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let mapped: SocketAddr = "[::ffff:127.0.0.1]:40000".parse().unwrap();
    assert!(!hops.contains(v4));
    {
        hops.lock().insert(canonical(v4));
        let _guard = HopGuard(&hops, canonical(v4));
        // A dual-stack listener sees it IPv4-mapped; another port is someone else.
        assert!(hops.contains(v4) && hops.contains(mapped));
        assert!(!hops.contains("127.0.0.1:40001".parse().unwrap()));
    }
    assert!(!hops.contains(v4), "forgotten when its connection ends");
}
