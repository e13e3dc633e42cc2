//! Capacity accounting of the node: transcode units charged to streams, reservations that
//! balancers hold for streams they are about to relay, and the overload mark.
//!
//! [`Capacity`] is plain state with time passed in as `now`: it never exceeds its total, even
//! under concurrent charges, and every reservation ends by being taken by its stream,
//! cancelled by its balancer, or expiring ([`Capacity::expire`]).

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU32, Ordering},
        Mutex,
    },
    time::Duration,
};

use tokio::time::Instant;

use crate::metrics;

/// After the last lagging frame, how long the node stays marked overloaded (refusing new
/// streams) so one late frame does not flap admission.
pub const OVERLOAD_HOLD: Duration = Duration::from_secs(30);

/// Capacity a balancer asked this node to hold for a stream it is about to relay.
pub struct Reservation {
    pub milli_units: u32,
    pub expires: Instant,
    /// Numbering to continue, when the stream was live on another node.
    pub continuation: Option<packager::Continuation>,
    /// The key check made before the capacity was held (the balancer sent credentials),
    /// with the stream_ref of the key it was made for: the arriving stream of that key uses
    /// it instead of asking a webhook twice.
    pub grant: Option<(crate::auth::Grant, String)>,
}

/// Why units could not be charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exhausted {
    /// The total would be exceeded.
    NoFreeUnits,
}

/// The node's transcode units.
pub struct Capacity {
    total: u32,
    used: AtomicU32,
    reservations: Mutex<HashMap<u64, Reservation>>,
    overloaded_until: Mutex<Option<Instant>>,
}

impl Capacity {
    pub fn new(total_milli_units: u32) -> Self {
        metrics::CAPACITY.set(i64::from(total_milli_units));
        Self {
            total: total_milli_units,
            used: AtomicU32::new(0),
            reservations: Mutex::new(HashMap::new()),
            overloaded_until: Mutex::new(None),
        }
    }

    pub fn total(&self) -> u32 {
        self.total
    }

    pub fn used(&self) -> u32 {
        self.used.load(Ordering::Acquire)
    }

    pub fn free(&self) -> u32 {
        self.total.saturating_sub(self.used())
    }

    /// Charge `want` units, or refuse: never exceeds the total, even under concurrent charges.
    pub fn charge(&self, want: u32) -> Result<(), Exhausted> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(want).filter(|n| *n <= self.total)
            })
            .map(|_| metrics::USED.set(i64::from(self.used())))
            .map_err(|_| Exhausted::NoFreeUnits)
    }

    /// Give back `units`.
    pub fn release(&self, units: u32) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                Some(u.saturating_sub(units))
            });
        metrics::USED.set(i64::from(self.used()));
    }

    /// Whether a reservation with this ID is held.
    pub fn has_reservation(&self, id: u64) -> bool {
        self.reservations
            .lock()
            .map(|r| r.contains_key(&id))
            .unwrap_or(false)
    }

    /// Record a reservation whose units are already charged.
    pub fn insert_reservation(&self, id: u64, r: Reservation) {
        if let Ok(mut m) = self.reservations.lock() {
            m.insert(id, r);
        }
    }

    /// Remove a reservation (its stream arrived, or its balancer cancelled it); its units stay
    /// charged: the caller releases or takes them over.
    pub fn take_reservation(&self, id: u64) -> Option<Reservation> {
        self.reservations
            .lock()
            .ok()
            .and_then(|mut r| r.remove(&id))
    }

    /// The key check a reservation was granted on, if it was made for the key whose
    /// stream_ref is `stream_ref`.
    pub fn reservation_grant(&self, id: u64, stream_ref: &str) -> Option<crate::auth::Grant> {
        let r = self.reservations.lock().ok()?;
        let (grant, for_ref) = r.get(&id)?.grant.as_ref()?;
        (for_ref == stream_ref).then(|| grant.clone())
    }

    /// The IDs of the reservations held.
    pub fn reservation_ids(&self) -> Vec<u64> {
        self.reservations
            .lock()
            .map(|r| r.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Release the reservations that expired by `now`; returns how many.
    pub fn expire(&self, now: Instant) -> usize {
        let expired: Vec<u32> = match self.reservations.lock() {
            Ok(mut r) => {
                let ids: Vec<u64> = r
                    .iter()
                    .filter(|(_, h)| h.expires <= now)
                    .map(|(id, _)| *id)
                    .collect();
                ids.iter()
                    .filter_map(|id| r.remove(id))
                    .map(|h| h.milli_units)
                    .collect()
            }
            Err(_) => Vec::new(),
        };
        for u in &expired {
            self.release(*u);
        }
        expired.len()
    }

    /// Whether a pipeline lagged within [`OVERLOAD_HOLD`] before `now`.
    pub fn overloaded(&self, now: Instant) -> bool {
        let Ok(mut until) = self.overloaded_until.lock() else {
            return false;
        };
        match *until {
            Some(t) if now < t => true,
            Some(_) => {
                *until = None;
                metrics::OVERLOADED.set(0);
                false
            }
            None => false,
        }
    }

    /// A pipeline lagged at `now`. True when this starts an overload (to log it once).
    pub fn mark_overloaded(&self, now: Instant) -> bool {
        let Ok(mut until) = self.overloaded_until.lock() else {
            return false;
        };
        let started = until.is_none();
        *until = Some(now + OVERLOAD_HOLD);
        metrics::OVERLOADED.set(1);
        started
    }
}

#[cfg(test)]
#[path = "capacity_test.rs"]
mod tests;
