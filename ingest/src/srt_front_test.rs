use super::*;
use std::{cell::Cell, rc::Rc};

#[derive(Clone)]
struct Fake {
    open: Rc<Cell<bool>>,
    phase: Rc<Cell<Phase>>,
}

impl Fake {
    fn new() -> Self {
        Self {
            open: Rc::new(Cell::new(true)),
            phase: Rc::new(Cell::new(Phase::Handshake)),
        }
    }
}

impl SessionLink for Fake {
    fn is_open(&self) -> bool {
        self.open.get()
    }
    fn phase(&self) -> Phase {
        self.phase.get()
    }
}

#[test]
fn a_whole_session_routes_to_one_session() {
    let mut f: Front<u32, Fake> = Front::new(8);
    assert_eq!(f.route(1, Kind::Data), Route::Drop("no_session"));
    assert_eq!(f.route(1, Kind::Induction), Route::Open);
    let s = Fake::new();
    f.insert(1, s.clone());
    // A retransmitted induction and the conclusion go to the handshaking session.
    assert_eq!(f.route(1, Kind::Induction), Route::ToSession);
    assert_eq!(f.route(1, Kind::Handshake), Route::ToSession);
    s.phase.set(Phase::Streaming);
    assert_eq!(f.route(1, Kind::Data), Route::ToSession);
    assert_eq!(f.route(1, Kind::Control), Route::ToSession);
    // After streaming, an induction from the same address is a new connection.
    assert_eq!(f.route(1, Kind::Induction), Route::Open);
    assert!(f.get(&1).is_none(), "the old session was dropped");
}

#[test]
fn an_ended_session_takes_nothing() {
    let mut f: Front<u32, Fake> = Front::new(8);
    assert_eq!(f.route(1, Kind::Induction), Route::Open);
    let s = Fake::new();
    f.insert(1, s.clone());
    s.open.set(false);
    assert_eq!(f.route(1, Kind::Data), Route::Drop("no_session"));
    assert_eq!(f.route(1, Kind::Induction), Route::Open);
}

#[test]
fn the_table_is_bounded_and_swept() {
    let mut f: Front<u32, Fake> = Front::new(2);
    let a = Fake::new();
    let b = Fake::new();
    assert_eq!(f.route(1, Kind::Induction), Route::Open);
    f.insert(1, a.clone());
    assert_eq!(f.route(2, Kind::Induction), Route::Open);
    f.insert(2, b);
    assert_eq!(
        f.route(3, Kind::Induction),
        Route::Drop("too_many_sessions")
    );
    a.open.set(false);
    assert_eq!(
        f.route(3, Kind::Induction),
        Route::Open,
        "ended session swept"
    );
    assert_eq!(f.len(), 1);
}
