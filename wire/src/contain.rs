//! Containing panics of third-party parsers fed untrusted bytes (rml_rtmp has known panics on
//! malformed chunks): [`catch`] turns a panic into an error for that one connection, counts it
//! ([`caught`]), and keeps the process's panic hook quiet about it ([`install_quiet_hook`]):
//! without that, every hostile input prints a panic message and a backtrace, a log flood an
//! attacker controls. A contained panic is logged once per [`LOG_INTERVAL`] with the count
//! since; any other panic still goes to the previous hook.

use std::{
    cell::Cell,
    panic::AssertUnwindSafe,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    time::Duration,
};

/// At most one log line per this interval for contained panics.
pub const LOG_INTERVAL: Duration = Duration::from_secs(60);

thread_local! {
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

static CAUGHT: AtomicU64 = AtomicU64::new(0);

/// A contained panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("parser failed")]
pub struct Panicked;

/// Run `f`; a panic inside it becomes `Err(Panicked)`.
pub fn catch<R>(f: impl FnOnce() -> R) -> Result<R, Panicked> {
    DEPTH.with(|d| d.set(d.get() + 1));
    let r = std::panic::catch_unwind(AssertUnwindSafe(f));
    DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    r.map_err(|_| {
        CAUGHT.fetch_add(1, Ordering::Relaxed);
        Panicked
    })
}

/// Whether the current thread runs inside [`catch`].
pub fn contained() -> bool {
    DEPTH.with(|d| d.get() > 0)
}

/// Contained panics since the process started (exported as a metric).
pub fn caught() -> u64 {
    CAUGHT.load(Ordering::Relaxed)
}

/// Install the hook: contained panics are counted and logged once per [`LOG_INTERVAL`] (on
/// stderr, one line, with the count); every other panic goes to the hook that was there.
pub fn install_quiet_hook() {
    let previous = std::panic::take_hook();
    // (when last logged, count at that time); the clock is only for rate limiting.
    static LAST: Mutex<Option<(tokio::time::Instant, u64)>> = Mutex::new(None);
    std::panic::set_hook(Box::new(move |info| {
        if !contained() {
            previous(info);
            return;
        }
        // `catch` counts after unwinding; this panic is the next one.
        let total = caught() + 1;
        let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
        let now = tokio::time::Instant::now();
        let due = last.is_none_or(|(at, _)| now.duration_since(at) >= LOG_INTERVAL);
        if due {
            let since = total - last.map_or(0, |(_, n)| n);
            let at = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            eprintln!(
                "contained a parser panic on untrusted input ({since} since the last report, {total} in all; last at {at}); the connection was closed, nothing else affected"
            );
            *last = Some((now, total));
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_inside_is_an_error_and_counted() {
        let before = caught();
        assert_eq!(catch(|| 7), Ok(7));
        let r: Result<(), _> = catch(|| panic!("hostile"));
        assert_eq!(r, Err(Panicked));
        assert_eq!(caught(), before + 1);
        assert!(!contained());
        assert_eq!(catch(contained), Ok(true));
    }
}
