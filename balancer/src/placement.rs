//! The placement policy: which ingest nodes may take a new stream, best first.
//!
//! Pure code: node views, pending placements and `now` come in, an ordered list of node ids goes
//! out. No sockets, no clock, no randomness except the seed passed to [`Policy::candidates`].
//!
//! Entry points:
//! - [`Policy::observe`]: feed the current view of every node (after a report or a refresh).
//! - [`Policy::candidates`]: the nodes to try for a new stream, best first; empty = refuse.
//! - [`Policy::add_pending`] / [`Policy::remove_pending`]: a node accepted (or the relay gave up
//!   on) a reservation; it counts against the node's free units until a report includes it.
//! - [`Policy::status`] / [`Policy::free_units`]: what the admin API shows.
//!
//! The rules (DESIGN.md, "The rules that make it an ingest edge and not a proxy"):
//! - Admission is not liveness: a node that is full, overloaded, draining, cordoned or lost
//!   gets nothing new and keeps its streams. Nothing here moves a stream; there is no such API.
//! - Free units = capacity - used (as reported, including the reservations the node holds) -
//!   this balancer's pending placements that the report does not include yet.
//! - When no node can take a stream it is refused: there is no panic mode.
//! - Affinity: a stream whose `stream_ref` is live on a node, or was within the reconnect window,
//!   goes back to that node while it can take it; otherwise least loaded or power of two choices.
//!
//! Caveats:
//! - All capacity numbers (`capacity`, `used`, `stream_cost`, `Pending::milli_units`, `units`)
//!   must be in the same unit (milli transcode units as the nodes report them).
//! - The placer trusts each view to be the node's newest report. A report delivered out of order
//!   can make it overestimate free units for a moment; capacity still holds because the node
//!   enforces it when it grants a reservation (the balancer then tries the next candidate).
//! - [`Policy::observe`] expects the full node list: a node missing from it counts as carrying
//!   none of its streams, which starts their reconnect window.

use std::collections::HashMap;
use std::time::Duration;

pub use edge_config::Ranking;
use edge_config::{DEFAULT_LOST_AFTER, DEFAULT_RANKING, DEFAULT_RECONNECT_WINDOW};
// Every `now` here is tokio's instant, so the driver's clock and a test on paused time agree
// (the policy itself never reads a clock).
use tokio::time::Instant;

/// The state an operator (or the node itself) put a node in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminState {
    /// Takes new streams when it has room.
    Ready,
    /// Shutting down: keeps its streams, takes no new ones.
    Draining,
    /// Kept out of placement by an operator: keeps its streams, takes no new ones.
    Cordoned,
}

/// What the balancer knows about one node, from its latest report.
#[derive(Debug, Clone)]
pub struct NodeView {
    pub id: String,
    pub state: AdminState,
    /// A pipeline on the node fell behind real time.
    pub overloaded: bool,
    /// When the latest report arrived.
    pub last_report: Instant,
    pub capacity: u32,
    /// Units in use as reported, including the reservations the node holds.
    pub used: u32,
    /// What a new stream costs on this node when the caller does not say.
    pub stream_cost: u32,
    /// The stream_refs live there.
    pub streams: Vec<String>,
    /// Reservation ids the node holds (granted, stream not arrived yet).
    pub reservations: Vec<u64>,
    /// Reservation ids of its live streams.
    pub stream_reservations: Vec<u64>,
}

/// What the balancer shows and uses for placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    /// Takes new streams.
    Ready,
    /// No room for a stream (or overloaded).
    Full,
    Draining,
    Cordoned,
    /// No report for `lost_after`.
    Lost,
}

/// A placement a node accepted that its reports do not include yet.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The reservation id the node granted.
    pub id: u64,
    pub node: String,
    pub milli_units: u32,
    /// When the node forgets the reservation if no stream used it.
    pub expires: Instant,
}

/// The settings of the [`Policy`] (from `[balancer]` in the config; reloadable).
#[derive(Debug, Clone)]
pub struct PolicyConfig {
    /// A node with no report for this long is lost: no new streams.
    pub lost_after: Duration,
    /// How long a stream goes back to its node after it disappeared from the node's reports.
    pub reconnect_window: Duration,
    pub ranking: Ranking,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            lost_after: DEFAULT_LOST_AFTER,
            reconnect_window: DEFAULT_RECONNECT_WINDOW,
            ranking: DEFAULT_RANKING,
        }
    }
}

impl From<&edge_config::BalancerConfig> for PolicyConfig {
    fn from(c: &edge_config::BalancerConfig) -> Self {
        PolicyConfig {
            lost_after: c.lost_after,
            reconnect_window: c.reconnect_window,
            ranking: c.policy,
        }
    }
}

/// Where a stream_ref lives or lived.
#[derive(Debug, Clone)]
struct Seen {
    node: String,
    /// `None` while the stream is live; when it disappeared otherwise.
    gone_at: Option<Instant>,
}

/// What a [`Policy`] knows, with times as ages, for the balancer that takes over.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PolicyState {
    /// (reservation id, node, milli-units, ms until it expires)
    pub pending: Vec<(u64, String, u32, u64)>,
    /// (stream_ref, node, ms since it disappeared; `None` while live)
    pub seen: Vec<(String, String, Option<u64>)>,
}

/// The state a balancer keeps: pending placements and recent stream locations (affinity).
/// Pure: all inputs passed in.
#[derive(Debug, Default)]
pub struct Policy {
    cfg: PolicyConfig,
    pending: Vec<Pending>,
    seen: HashMap<String, Seen>,
}

impl Policy {
    pub fn new(cfg: PolicyConfig) -> Self {
        Policy {
            cfg,
            pending: Vec::new(),
            seen: HashMap::new(),
        }
    }

    /// Everything but the settings, for a successor ([`Policy::import`]).
    pub fn export(&self, now: Instant) -> PolicyState {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        PolicyState {
            pending: self
                .pending
                .iter()
                .map(|p| {
                    (
                        p.id,
                        p.node.clone(),
                        p.milli_units,
                        ms(p.expires.saturating_duration_since(now)),
                    )
                })
                .collect(),
            seen: self
                .seen
                .iter()
                .map(|(r, s)| {
                    (
                        r.clone(),
                        s.node.clone(),
                        s.gone_at.map(|g| ms(now.saturating_duration_since(g))),
                    )
                })
                .collect(),
        }
    }

    /// Continue from a predecessor's [`Policy::export`].
    pub fn import(&mut self, st: PolicyState, now: Instant) {
        for (id, node, milli_units, left_ms) in st.pending {
            self.pending.push(Pending {
                id,
                node,
                milli_units,
                expires: now + Duration::from_millis(left_ms),
            });
        }
        for (r, node, gone_ms) in st.seen {
            let gone_at = gone_ms.map(|g| now.checked_sub(Duration::from_millis(g)).unwrap_or(now));
            self.seen.insert(r, Seen { node, gone_at });
        }
    }

    /// Apply a reloaded config; pending placements and stream locations are kept.
    pub fn reconfigure(&mut self, cfg: PolicyConfig) {
        self.cfg = cfg;
    }

    pub fn config(&self) -> &PolicyConfig {
        &self.cfg
    }

    /// A report arrived (or the node list was refreshed): drop pendings that the node now
    /// includes (or that expired), remember where stream_refs live (until now +
    /// reconnect_window after they disappear). `nodes` is the full node list.
    pub fn observe(&mut self, nodes: &[NodeView], now: Instant) {
        self.pending
            .retain(|p| p.expires > now && !nodes.iter().any(|n| includes(n, p)));

        let mut live: HashMap<&str, &str> = HashMap::new();
        for n in nodes {
            for s in &n.streams {
                // A stream listed by two nodes (a stale publisher not yet replaced): keep the first.
                live.entry(s.as_str()).or_insert(n.id.as_str());
            }
        }
        for seen in self.seen.values_mut() {
            if seen.gone_at.is_none() {
                seen.gone_at = Some(now);
            }
        }
        for (stream, node) in live {
            self.seen.insert(
                stream.to_owned(),
                Seen {
                    node: node.to_owned(),
                    gone_at: None,
                },
            );
        }
        let window = self.cfg.reconnect_window;
        self.seen.retain(|_, s| match s.gone_at {
            None => true,
            Some(t) => within(now, t, window),
        });
    }

    pub fn status(&self, node: &NodeView, now: Instant) -> NodeStatus {
        if now.saturating_duration_since(node.last_report) >= self.cfg.lost_after {
            return NodeStatus::Lost;
        }
        match node.state {
            AdminState::Cordoned => NodeStatus::Cordoned,
            AdminState::Draining => NodeStatus::Draining,
            AdminState::Ready => {
                let free = self.free_units(node, now);
                if node.overloaded || free == 0 || free < node.stream_cost {
                    NodeStatus::Full
                } else {
                    NodeStatus::Ready
                }
            }
        }
    }

    /// The node's free units if it may take a new stream costing `cost`: reported recently,
    /// ready, not overloaded, and with at least `cost` (and at least one) free units.
    fn admits(&self, node: &NodeView, cost: u32, now: Instant) -> Option<u32> {
        let fresh = now.saturating_duration_since(node.last_report) < self.cfg.lost_after;
        let free = self.free_units(node, now);
        (fresh && node.state == AdminState::Ready && !node.overloaded && free > 0 && free >= cost)
            .then_some(free)
    }

    /// capacity - used - this balancer's live pendings on the node that its view does not
    /// include yet (saturating at 0).
    pub fn free_units(&self, node: &NodeView, now: Instant) -> u32 {
        let pending = self
            .pending
            .iter()
            .filter(|p| p.node == node.id && p.expires > now && !includes(node, p))
            .fold(0u32, |acc, p| acc.saturating_add(p.milli_units));
        node.capacity
            .saturating_sub(node.used)
            .saturating_sub(pending)
    }

    /// Nodes to try for a new stream costing `units` (or each node's stream_cost when None),
    /// best first; empty = refuse. `seed` drives power-of-two choices deterministically.
    pub fn candidates(
        &self,
        nodes: &[NodeView],
        stream_ref: Option<&str>,
        units: Option<u32>,
        seed: u64,
        now: Instant,
    ) -> Vec<String> {
        // (node, free units), each id once (the first view wins).
        let mut ok: Vec<(&NodeView, u32)> = Vec::new();
        for (i, n) in nodes.iter().enumerate() {
            if nodes.iter().take(i).any(|o| o.id == n.id) {
                continue;
            }
            if let Some(free) = self.admits(n, units.unwrap_or(n.stream_cost), now) {
                ok.push((n, free));
            }
        }
        if ok.is_empty() {
            return Vec::new();
        }
        // Least loaded order: most free first, ties by id.
        ok.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.id.cmp(&b.0.id)));

        let mut out: Vec<String> = Vec::with_capacity(ok.len());
        if let Some(home) = stream_ref.and_then(|r| self.home(nodes, r, now)) {
            if let Some(pos) = ok.iter().position(|(n, _)| n.id == home) {
                let (n, _) = ok.remove(pos);
                out.push(n.id.clone());
            }
        }
        if self.cfg.ranking == Ranking::PowerOfTwo && ok.len() >= 2 {
            let mut rng = SplitMix64(seed);
            let len = ok.len() as u64;
            let i = (rng.next() % len) as usize;
            let mut j = (rng.next() % (len - 1)) as usize;
            if j >= i {
                j += 1;
            }
            // `ok` is sorted best first: the smaller index wins the pair.
            let (first, second) = (i.min(j), i.max(j));
            let b = ok.remove(second);
            let a = ok.remove(first);
            out.push(a.0.id.clone());
            out.push(b.0.id.clone());
        }
        out.extend(ok.into_iter().map(|(n, _)| n.id.clone()));
        out
    }

    /// Record that `node` accepted reservation `id` for `units` until `expires` (counts against
    /// its free units from now on). A second call with the same id replaces the first.
    pub fn add_pending(&mut self, p: Pending) {
        self.pending.retain(|q| q.id != p.id);
        self.pending.push(p);
    }

    /// Forget a pending placement (the node refused it, or the relay failed before connecting).
    pub fn remove_pending(&mut self, id: u64) {
        self.pending.retain(|p| p.id != id);
    }

    pub fn pending(&self) -> &[Pending] {
        &self.pending
    }

    /// Where a stream_ref lives or lived recently, if the memory is still valid.
    pub fn affinity(&self, stream_ref: &str, now: Instant) -> Option<&str> {
        let s = self.seen.get(stream_ref)?;
        match s.gone_at {
            None => Some(s.node.as_str()),
            Some(t) if within(now, t, self.cfg.reconnect_window) => Some(s.node.as_str()),
            Some(_) => None,
        }
    }

    /// The node a stream should go back to: where the given views show it live, else where it
    /// was seen within the reconnect window.
    fn home<'a>(
        &'a self,
        nodes: &'a [NodeView],
        stream_ref: &str,
        now: Instant,
    ) -> Option<&'a str> {
        nodes
            .iter()
            .find(|n| n.streams.iter().any(|s| s == stream_ref))
            .map(|n| n.id.as_str())
            .or_else(|| self.affinity(stream_ref, now))
    }
}

/// Whether `now` is less than `window` after `since` (a window too large for `Instant` never ends).
fn within(now: Instant, since: Instant, window: Duration) -> bool {
    since.checked_add(window).is_none_or(|end| now < end)
}

/// Whether a node's report already accounts for a pending placement.
fn includes(node: &NodeView, p: &Pending) -> bool {
    node.id == p.node
        && (node.reservations.contains(&p.id) || node.stream_reservations.contains(&p.id))
}

/// A tiny seeded generator (SplitMix64) so power-of-two choices stay deterministic and pure.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
#[path = "placement_test.rs"]
mod tests;
