use super::*;

fn reservation(units: u32, expires: Instant) -> Reservation {
    Reservation {
        milli_units: units,
        expires,
        continuation: None,
        grant: None,
    }
}

#[test]
fn never_exceeds_the_total() {
    let c = Capacity::new(3000);
    c.charge(1000).expect("1");
    c.charge(2000).expect("2");
    assert_eq!(c.charge(1), Err(Exhausted::NoFreeUnits));
    c.release(1000);
    assert_eq!(c.free(), 1000);
    c.charge(1000).expect("again");
    c.release(99_999);
    assert_eq!(c.used(), 0, "release saturates");
}

#[tokio::test(start_paused = true)]
async fn reservations_expire_on_the_clock() {
    let c = Capacity::new(5000);
    let ttl = Duration::from_secs(10);
    c.charge(2000).expect("charge");
    c.insert_reservation(7, reservation(2000, Instant::now() + ttl));
    assert!(c.has_reservation(7));
    tokio::time::advance(ttl - Duration::from_millis(1)).await;
    assert_eq!(c.expire(Instant::now()), 0, "not yet");
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(c.expire(Instant::now()), 1);
    assert!(!c.has_reservation(7));
    assert_eq!(c.used(), 0, "expired units released");
}

#[test]
fn a_taken_reservation_keeps_its_units() {
    let c = Capacity::new(5000);
    let now = Instant::now();
    c.charge(2000).expect("charge");
    c.insert_reservation(1, reservation(2000, now));
    let r = c.take_reservation(1).expect("held");
    assert_eq!(r.milli_units, 2000);
    assert_eq!(c.used(), 2000, "the stream took the units over");
    assert_eq!(c.expire(now + Duration::from_secs(99)), 0);
}

#[tokio::test(start_paused = true)]
async fn overload_holds_then_clears() {
    let c = Capacity::new(1000);
    assert!(!c.overloaded(Instant::now()));
    assert!(c.mark_overloaded(Instant::now()), "first mark starts it");
    assert!(!c.mark_overloaded(Instant::now()), "second mark extends it");
    tokio::time::advance(OVERLOAD_HOLD - Duration::from_millis(1)).await;
    assert!(c.overloaded(Instant::now()));
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(!c.overloaded(Instant::now()));
}
