//! Unit tests of `refusals`: the limit per address and window, IPv6 by /64, the table bound.

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn an_address_over_its_limit_waits_for_the_window() {
    let l = RefusalLimiter::new(3);
    let t0 = Instant::now();
    let a = ip("192.0.2.1");
    for i in 0..3 {
        assert!(l.check(a, t0).is_ok(), "attempt {i}");
        assert_eq!(l.record(a, t0), i == 2);
    }
    let limited = l.check(a, t0 + Duration::from_secs(10)).unwrap_err();
    assert_eq!(limited.retry_after, Duration::from_secs(50));
    assert_eq!(
        limited.to_string(),
        "too many refused publishes from this address; retry in 50 s"
    );
    // Other addresses are not affected, and the window ends.
    assert!(l.check(ip("192.0.2.2"), t0).is_ok());
    assert!(l.check(a, t0 + WINDOW).is_ok());
    assert!(!l.record(a, t0 + WINDOW));
    assert!(l.check(a, t0 + WINDOW).is_ok());
}

#[test]
fn mapped_v4_and_one_v6_prefix_count_as_one_address() {
    let l = RefusalLimiter::new(2);
    let t0 = Instant::now();
    l.record(ip("::ffff:192.0.2.9"), t0);
    l.record(ip("192.0.2.9"), t0);
    assert!(l.check(ip("192.0.2.9"), t0).is_err());
    l.record(ip("2001:db8:1:2::1"), t0);
    l.record(ip("2001:db8:1:2:ffff::7"), t0);
    assert!(l.check(ip("2001:db8:1:2::99"), t0).is_err());
    assert!(l.check(ip("2001:db8:1:3::1"), t0).is_ok());
}

#[test]
fn zero_means_no_limit() {
    let l = RefusalLimiter::new(0);
    let t0 = Instant::now();
    for _ in 0..100 {
        l.record(ip("192.0.2.1"), t0);
    }
    assert!(l.check(ip("192.0.2.1"), t0).is_ok());
    assert_eq!(l.tracked(), 0);
}

#[test]
fn the_table_is_bounded_and_expired_entries_make_room() {
    let l = RefusalLimiter::new(1);
    let t0 = Instant::now();
    for i in 0..MAX_TRACKED as u32 {
        l.record(IpAddr::from(i.to_be_bytes()), t0);
    }
    assert_eq!(l.tracked(), MAX_TRACKED);
    // Full: a new address is not tracked (fails open) ...
    let new = ip("203.0.113.1");
    l.record(new, t0);
    assert!(l.check(new, t0).is_ok());
    assert_eq!(l.tracked(), MAX_TRACKED);
    // ... until the window passes and the old entries go.
    l.record(new, t0 + WINDOW);
    assert_eq!(l.tracked(), 1);
    assert!(l.check(new, t0 + WINDOW).is_err());
}
