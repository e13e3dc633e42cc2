//! A gate on a listener's accept loop, steered from outside: open, paused (new connections
//! wait in the kernel's backlog, as they do while a balancer hands its sockets to its
//! successor), or retired (accept no more; live connections finish what they are doing and
//! close, HTTP with `Connection: close` or a GOAWAY).
//!
//! Entry point: [`gate`] makes a [`GateHandle`] (the steering side) and a [`Gate`] (cloned
//! into every loop and connection task).

use tokio::sync::watch;

/// The steering side.
#[derive(Debug, Clone)]
pub struct GateHandle {
    state: watch::Sender<State>,
}

/// The loop side.
#[derive(Debug, Clone)]
pub struct Gate {
    state: watch::Receiver<State>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    Paused,
    Retired,
}

/// A new gate, open.
pub fn gate() -> (GateHandle, Gate) {
    let (tx, rx) = watch::channel(State::Open);
    (GateHandle { state: tx }, Gate { state: rx })
}

impl GateHandle {
    /// Stop accepting for now; connections wait in the backlog.
    pub fn pause(&self) {
        self.state.send_if_modified(|s| {
            let was = *s;
            if *s == State::Open {
                *s = State::Paused;
            }
            was != *s
        });
    }
    /// Accept again after a pause.
    pub fn resume(&self) {
        self.state.send_if_modified(|s| {
            let was = *s;
            if *s == State::Paused {
                *s = State::Open;
            }
            was != *s
        });
    }
    /// Accept no more, for good; live connections wind down.
    pub fn retire(&self) {
        self.state.send_replace(State::Retired);
    }
    /// A gate for a loop started later.
    pub fn gate(&self) -> Gate {
        Gate {
            state: self.state.subscribe(),
        }
    }
}

impl Gate {
    /// Wait while paused: `true` when open, `false` once retired.
    pub async fn open(&mut self) -> bool {
        loop {
            match *self.state.borrow_and_update() {
                State::Open => return true,
                State::Retired => return false,
                State::Paused => {}
            }
            if self.state.changed().await.is_err() {
                // The handle is gone: nobody can pause or retire us any more.
                return true;
            }
        }
    }

    /// Resolves when the gate leaves the open state (paused or retired): an accept loop
    /// waiting in `accept` goes back to [`Gate::open`].
    pub async fn closing(&mut self) {
        loop {
            if *self.state.borrow_and_update() != State::Open {
                return;
            }
            if self.state.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Resolves once retired.
    pub async fn retired(&mut self) {
        loop {
            if *self.state.borrow_and_update() == State::Retired {
                return;
            }
            if self.state.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    pub fn is_retired(&self) -> bool {
        *self.state.borrow() == State::Retired
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn pause_resume_retire() {
        let (h, mut g) = gate();
        assert!(g.open().await);
        h.pause();
        let mut g2 = g.clone();
        tokio::time::timeout(Duration::from_secs(1), g2.closing())
            .await
            .unwrap();
        let waiting = tokio::spawn(async move { g2.open().await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiting.is_finished(), "paused: waits");
        h.resume();
        assert!(waiting.await.unwrap());
        h.retire();
        assert!(!g.open().await);
        g.retired().await;
        assert!(g.is_retired());
        // Retired is final.
        h.resume();
        assert!(!g.open().await);
    }
}
