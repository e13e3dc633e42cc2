//! Unit tests of `auth` (kept beside it; compiled only for tests).

use super::*;

#[test]
fn config_keys_match_exactly() {
    let cfg = edge_config::load_str(edge_config::DEV_CONFIG, "dev").unwrap();
    let a = Authenticator::new(&cfg);
    assert_eq!(a.check_config("dev-stream-key").unwrap().playback_id, "dev");
    assert!(a.check_config("dev-stream-ke").is_none());
    assert!(a.check_config("dev-stream-keyy").is_none());
    assert!(a.check_config("").is_none());
}

#[test]
fn derived_ids_are_keyed_hashes() {
    let s1 = b"a-32-character-secret-for-tests!";
    let s2 = b"another-32-character-secret-here";
    assert_ne!(derived_playback_id("a", s1), derived_playback_id("b", s1));
    // The same key gives another ID under another secret: knowing the hash function is not
    // enough to search for short keys.
    assert_ne!(derived_playback_id("a", s1), derived_playback_id("a", s2));
    assert_eq!(derived_playback_id("a", s1), derived_playback_id("a", s1));
    let id = derived_playback_id("secret", s1);
    assert!(!id.contains("secret"));
    assert_eq!(id.len(), 33);
    assert!(id.starts_with('s') && id[1..].bytes().all(|b| b.is_ascii_hexdigit()));
}

#[test]
fn signatures_are_hmac_sha256() {
    // RFC 4231 test case 2.
    assert_eq!(
        hmac_hex(b"Jefe", &[b"what do ya want ", b"for nothing?"]),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}
