//! A limit on refused publishes per source address: an address whose stream keys were refused
//! too often in a window is refused at once, before any key check or placement, until the
//! window ends. A key-guessing address then costs the node's webhook and the balancer's
//! placements nothing; an encoder with a typo in its key retries every few seconds, well
//! under any sensible limit, and sees the reason in its status line.
//!
//! Entry point: [`RefusalLimiter`]: [`RefusalLimiter::check`] before the key check,
//! [`RefusalLimiter::record`] after a refusal. Pure state with `now` passed in.
//!
//! Addresses are counted canonically (an IPv4-mapped IPv6 address is its IPv4 address) and
//! IPv6 by /64, the smallest block one subscriber gets, so rotating through a prefix does not
//! escape the limit.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
    sync::Mutex,
    time::Duration,
};

use tokio::time::Instant;

/// The window the limit counts in.
pub const WINDOW: Duration = Duration::from_secs(60);

/// Addresses tracked at once. An entry is ~40 bytes, so this bounds the table near 4 MiB
/// however many addresses a flood comes from; when full, expired entries are dropped first,
/// and an address that finds no room is not limited (the connection caps still hold).
pub const MAX_TRACKED: usize = 100_000;

/// Refused publishes allowed per address per [`WINDOW`]; `0` turns the limit off.
#[derive(Debug)]
pub struct RefusalLimiter {
    per_window: std::sync::atomic::AtomicU32,
    seen: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

/// An address over its limit, and when it may try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many refused publishes from this address; retry in {} s", retry_after.as_secs().max(1))]
pub struct Limited {
    pub retry_after: Duration,
}

fn bucket(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

impl RefusalLimiter {
    /// At most `per_window` refusals per address per [`WINDOW`] (`0`: no limit).
    pub fn new(per_window: u32) -> Self {
        RefusalLimiter {
            per_window: per_window.into(),
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Change the limit (a reloaded config); what was counted stays.
    pub fn set_limit(&self, per_window: u32) {
        self.per_window
            .store(per_window, std::sync::atomic::Ordering::Relaxed);
    }

    fn limit(&self) -> u32 {
        self.per_window.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, (Instant, u32)>> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `ip` may try a publish now.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Limited> {
        let limit = self.limit();
        if limit == 0 {
            return Ok(());
        }
        match self.lock().get(&bucket(ip)) {
            Some((start, n)) if *n >= limit && now < *start + WINDOW => Err(Limited {
                retry_after: (*start + WINDOW).saturating_duration_since(now),
            }),
            _ => Ok(()),
        }
    }

    /// A publish from `ip` was refused (wrong key, or it was limited). True when this refusal
    /// puts the address over its limit (to log it once).
    pub fn record(&self, ip: IpAddr, now: Instant) -> bool {
        let limit = self.limit();
        if limit == 0 {
            return false;
        }
        let mut seen = self.lock();
        if seen.len() >= MAX_TRACKED {
            seen.retain(|_, (start, _)| now < *start + WINDOW);
        }
        let len = seen.len();
        let key = bucket(ip);
        let entry = match seen.get_mut(&key) {
            Some(e) => e,
            None if len >= MAX_TRACKED => return false,
            None => seen.entry(key).or_insert((now, 0)),
        };
        if now >= entry.0 + WINDOW {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        entry.1 == limit
    }

    /// Addresses tracked now (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
#[path = "refusals_test.rs"]
mod tests;
