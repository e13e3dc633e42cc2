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
    assert_ne!(derived_playback_id("a"), derived_playback_id("b"));
    assert!(!derived_playback_id("secret").contains("secret"));
}
