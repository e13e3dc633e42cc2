//! Unit tests of `placement` (kept beside it; compiled only for tests).

use super::*;
use proptest::prelude::*;

const MS: Duration = Duration::from_millis(1);

fn cfg(ranking: Ranking) -> PolicyConfig {
    PolicyConfig {
        lost_after: Duration::from_secs(5),
        reconnect_window: Duration::from_secs(30),
        ranking,
    }
}

/// A ready node that reported at `at`.
fn node(id: &str, capacity: u32, used: u32, at: Instant) -> NodeView {
    NodeView {
        id: id.into(),
        state: AdminState::Ready,
        overloaded: false,
        last_report: at,
        capacity,
        used,
        stream_cost: 1000,
        streams: vec![],
        reservations: vec![],
        stream_reservations: vec![],
    }
}

fn pending(id: u64, node: &str, units: u32, expires: Instant) -> Pending {
    Pending {
        id,
        node: node.into(),
        milli_units: units,
        expires,
    }
}

fn ids(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn status_of_each_kind_of_node() {
    let t0 = Instant::now();
    let now = t0 + Duration::from_secs(1);
    let p = Policy::new(cfg(Ranking::LeastLoaded));
    assert_eq!(p.status(&node("a", 4000, 0, t0), now), NodeStatus::Ready);
    assert_eq!(p.status(&node("a", 4000, 3500, t0), now), NodeStatus::Full);
    assert_eq!(p.status(&node("a", 4000, 4000, t0), now), NodeStatus::Full);
    assert_eq!(p.status(&node("a", 4000, 9000, t0), now), NodeStatus::Full);
    let mut n = node("a", 4000, 0, t0);
    n.overloaded = true;
    assert_eq!(p.status(&n, now), NodeStatus::Full);
    n.overloaded = false;
    n.state = AdminState::Draining;
    assert_eq!(p.status(&n, now), NodeStatus::Draining);
    n.state = AdminState::Cordoned;
    assert_eq!(p.status(&n, now), NodeStatus::Cordoned);
    // Lost beats everything else: its other fields are stale.
    assert_eq!(p.status(&n, t0 + Duration::from_secs(5)), NodeStatus::Lost);
    let ready = node("a", 4000, 0, t0);
    assert_eq!(
        p.status(&ready, t0 + Duration::from_secs(5)),
        NodeStatus::Lost
    );
    assert_eq!(
        p.status(&ready, t0 + Duration::from_millis(4999)),
        NodeStatus::Ready
    );
    // A report stamped after `now` (clock skew between tasks) is fresh, not a panic.
    assert_eq!(p.status(&node("a", 4000, 0, now), t0), NodeStatus::Ready);
    assert_eq!(
        serde_json::to_string(&NodeStatus::Cordoned).unwrap(),
        "\"cordoned\""
    );
    assert_eq!(
        serde_json::to_string(&AdminState::Ready).unwrap(),
        "\"ready\""
    );
}

#[test]
fn only_ready_nodes_with_room_are_candidates() {
    let t0 = Instant::now();
    let now = t0 + Duration::from_secs(1);
    let p = Policy::new(cfg(Ranking::LeastLoaded));
    let mut nodes = vec![
        node("full", 4000, 3500, t0),
        node("lost", 8000, 0, t0 - Duration::from_secs(10)),
        node("ready", 4000, 1000, t0),
        node("drain", 8000, 0, t0),
        node("cordon", 8000, 0, t0),
        node("hot", 8000, 0, t0),
    ];
    nodes[3].state = AdminState::Draining;
    nodes[4].state = AdminState::Cordoned;
    nodes[5].overloaded = true;
    assert_eq!(p.candidates(&nodes, None, None, 0, now), ids(&["ready"]));
    // An explicit cost overrides the node's own.
    assert_eq!(
        p.candidates(&nodes, None, Some(500), 0, now),
        ids(&["ready", "full"])
    );
    assert!(p.candidates(&nodes, None, Some(3001), 0, now).is_empty());
}

#[test]
fn every_node_full_means_refuse() {
    let t0 = Instant::now();
    let p = Policy::new(cfg(Ranking::PowerOfTwo));
    let nodes = vec![node("a", 4000, 4000, t0), node("b", 4000, 3999, t0)];
    for seed in 0..50 {
        assert!(p.candidates(&nodes, Some("s"), None, seed, t0).is_empty());
    }
    assert!(p.candidates(&[], None, None, 0, t0).is_empty());
}

#[test]
fn least_loaded_orders_by_free_units_then_id() {
    let t0 = Instant::now();
    let p = Policy::new(cfg(Ranking::LeastLoaded));
    let nodes = vec![
        node("c", 4000, 1000, t0),
        node("b", 4000, 0, t0),
        node("a", 4000, 1000, t0),
        node("d", 8000, 3000, t0),
    ];
    assert_eq!(
        p.candidates(&nodes, None, None, 7, t0),
        ids(&["d", "b", "a", "c"])
    );
}

#[test]
fn power_of_two_is_seeded_and_prefers_the_freer_of_two() {
    let t0 = Instant::now();
    let p = Policy::new(cfg(Ranking::PowerOfTwo));
    let nodes: Vec<NodeView> = (0..6)
        .map(|i| node(&format!("n{i}"), 10_000, i * 1000, t0))
        .collect();
    let mut firsts = std::collections::HashSet::new();
    for seed in 0..200 {
        let c = p.candidates(&nodes, None, None, seed, t0);
        assert_eq!(
            c,
            p.candidates(&nodes, None, None, seed, t0),
            "deterministic"
        );
        assert_eq!(c.len(), 6);
        let free = |id: &str| 10_000 - id[1..].parse::<u32>().unwrap() * 1000;
        assert!(
            free(&c[0]) > free(&c[1]),
            "the better of the pair goes first: {c:?}"
        );
        // The rest are in least loaded order.
        let rest: Vec<u32> = c[2..].iter().map(|id| free(id)).collect();
        assert!(rest.windows(2).all(|w| w[0] >= w[1]));
        firsts.insert(c[0].clone());
    }
    // Two choices spread the load: the most loaded node can never win a pair.
    assert!(firsts.len() >= 4, "{firsts:?}");
    assert!(!firsts.contains("n5"));
}

#[test]
fn pending_counts_until_a_report_includes_it() {
    let t0 = Instant::now();
    let mut p = Policy::new(cfg(Ranking::LeastLoaded));
    let exp = t0 + Duration::from_secs(10);
    let a = node("a", 3000, 0, t0);
    p.add_pending(pending(1, "a", 1000, exp));
    p.add_pending(pending(2, "a", 1000, exp));
    assert_eq!(p.free_units(&a, t0), 1000);
    assert_eq!(
        p.candidates(std::slice::from_ref(&a), None, None, 0, t0),
        ids(&["a"])
    );
    p.add_pending(pending(3, "a", 1000, exp));
    assert_eq!(p.free_units(&a, t0), 0);
    assert_eq!(p.status(&a, t0), NodeStatus::Full);
    assert!(p
        .candidates(std::slice::from_ref(&a), None, None, 0, t0)
        .is_empty());

    // A report that holds reservation 1 and a stream from reservation 2.
    let mut r = node("a", 3000, 2000, t0 + MS);
    r.reservations = vec![1];
    r.streams = vec!["s2".into()];
    r.stream_reservations = vec![2];
    // Even before observe, the view's own inclusion is not double counted.
    assert_eq!(p.free_units(&r, t0 + MS), 0);
    p.observe(&[r.clone()], t0 + MS);
    assert_eq!(
        p.pending().iter().map(|p| p.id).collect::<Vec<_>>(),
        vec![3]
    );
    // A report from another node never drops a pending of this one.
    let mut other = node("b", 3000, 0, t0 + MS);
    other.reservations = vec![3];
    p.observe(&[r.clone(), other], t0 + MS);
    assert_eq!(p.pending().len(), 1);
    // Refused by the node or failed before connecting: forgotten.
    p.remove_pending(3);
    assert!(p.pending().is_empty());
    assert_eq!(p.free_units(&r, t0 + MS), 1000);
}

#[test]
fn pending_expires() {
    let t0 = Instant::now();
    let mut p = Policy::new(cfg(Ranking::LeastLoaded));
    let a = node("a", 2000, 0, t0);
    p.add_pending(pending(9, "a", 1500, t0 + Duration::from_secs(2)));
    assert_eq!(p.free_units(&a, t0 + Duration::from_millis(1999)), 500);
    assert_eq!(p.free_units(&a, t0 + Duration::from_secs(2)), 2000);
    p.observe(std::slice::from_ref(&a), t0 + MS);
    assert_eq!(p.pending().len(), 1);
    p.observe(&[a], t0 + Duration::from_secs(2));
    assert!(p.pending().is_empty());
}

#[test]
fn one_balancer_placing_fast_never_overcommits_from_a_stale_report() {
    // Ten placements before any new report: pendings keep the placer honest.
    let t0 = Instant::now();
    let mut p = Policy::new(cfg(Ranking::LeastLoaded));
    let nodes = vec![node("a", 3000, 0, t0), node("b", 2000, 0, t0)];
    let mut placed = 0;
    for i in 0..10u64 {
        let Some(first) = p.candidates(&nodes, None, None, i, t0).first().cloned() else {
            continue;
        };
        p.add_pending(pending(i, &first, 1000, t0 + Duration::from_secs(10)));
        placed += 1;
    }
    assert_eq!(placed, 5);
    let per = |id: &str| p.pending().iter().filter(|q| q.node == id).count();
    assert_eq!((per("a"), per("b")), (3, 2));
}

#[test]
fn affinity_sends_a_stream_back_to_its_node() {
    let t0 = Instant::now();
    let mut p = Policy::new(cfg(Ranking::LeastLoaded));
    let mut home = node("home", 4000, 2000, t0);
    home.streams = vec!["s".into()];
    let idle = node("idle", 8000, 0, t0);
    let nodes = vec![idle.clone(), home.clone()];
    // Live there (in the views themselves) beats least loaded.
    assert_eq!(
        p.candidates(&nodes, Some("s"), None, 0, t0),
        ids(&["home", "idle"])
    );
    assert_eq!(
        p.candidates(&nodes, Some("t"), None, 0, t0),
        ids(&["idle", "home"])
    );
    p.observe(&nodes, t0);
    assert_eq!(p.affinity("s", t0), Some("home"));

    // The encoder dropped: the stream is gone from the report, within the window.
    let t1 = t0 + Duration::from_secs(1);
    let mut home1 = node("home", 4000, 1000, t1);
    let idle1 = node("idle", 8000, 0, t1);
    p.observe(&[idle1.clone(), home1.clone()], t1);
    let t2 = t1 + Duration::from_secs(29);
    home1.last_report = t2;
    let mut idle2 = idle1.clone();
    idle2.last_report = t2;
    assert_eq!(p.affinity("s", t2), Some("home"));
    assert_eq!(
        p.candidates(&[idle2.clone(), home1.clone()], Some("s"), None, 0, t2),
        ids(&["home", "idle"])
    );
    // Affinity never overrides admission: a full home gets nothing.
    let mut full = home1.clone();
    full.used = 4000;
    assert_eq!(
        p.candidates(&[idle2.clone(), full], Some("s"), None, 0, t2),
        ids(&["idle"])
    );
    let mut draining = home1.clone();
    draining.state = AdminState::Draining;
    assert_eq!(
        p.candidates(&[idle2.clone(), draining], Some("s"), None, 0, t2),
        ids(&["idle"])
    );
    // After the window: plain least loaded.
    let t3 = t1 + Duration::from_secs(30);
    assert_eq!(p.affinity("s", t3), None);
    home1.last_report = t3;
    idle2.last_report = t3;
    p.observe(&[idle2.clone(), home1.clone()], t3);
    assert_eq!(
        p.candidates(&[idle2, home1], Some("s"), None, 0, t3),
        ids(&["idle", "home"])
    );
}

#[test]
fn a_node_leaving_the_list_starts_the_window_and_a_return_resets_it() {
    let t0 = Instant::now();
    let mut p = Policy::new(cfg(Ranking::LeastLoaded));
    let mut a = node("a", 4000, 0, t0);
    a.streams = vec!["s".into()];
    p.observe(&[a.clone()], t0);
    p.observe(&[], t0 + Duration::from_secs(10));
    assert_eq!(p.affinity("s", t0 + Duration::from_secs(39)), Some("a"));
    p.observe(&[a.clone()], t0 + Duration::from_secs(20));
    assert_eq!(p.affinity("s", t0 + Duration::from_secs(100)), Some("a"));
    p.observe(&[], t0 + Duration::from_secs(100));
    p.observe(&[], t0 + Duration::from_secs(130));
    assert_eq!(p.affinity("s", t0 + Duration::from_secs(130)), None);
}

#[test]
fn duplicate_node_ids_appear_once() {
    let t0 = Instant::now();
    let p = Policy::new(cfg(Ranking::PowerOfTwo));
    let nodes = vec![
        node("a", 4000, 0, t0),
        node("a", 4000, 0, t0),
        node("b", 4000, 0, t0),
    ];
    for seed in 0..20 {
        let mut c = p.candidates(&nodes, None, None, seed, t0);
        c.sort();
        assert_eq!(c, ids(&["a", "b"]));
    }
}

#[test]
fn policy_config_defaults_and_from_the_balancer_config() {
    let d = PolicyConfig::default();
    assert_eq!(
        (d.lost_after, d.reconnect_window, d.ranking),
        (
            DEFAULT_LOST_AFTER,
            DEFAULT_RECONNECT_WINDOW,
            DEFAULT_RANKING
        )
    );
    let paths = || edge_config::TlsPaths {
        ca: "ca".into(),
        cert: "c".into(),
        key: "k".into(),
    };
    let b = edge_config::BalancerConfig {
        id: "b".into(),
        lost_after: Duration::from_secs(7),
        reservation_ttl: Duration::from_secs(9),
        reconnect_window: Duration::from_secs(11),
        policy: Ranking::PowerOfTwo,
        refused_publishes_per_minute: 10,
        handover_socket: "/tmp/none.sock".into(),
        drain_deadline: Duration::from_secs(60),
        listen: edge_config::BalancerListen {
            rtmp: edge_config::DEFAULT_LISTEN_RTMP,
            rtmps: None,
            https: None,
            srt: edge_config::DEFAULT_LISTEN_SRT,
            http: edge_config::DEFAULT_LISTEN_HTTP,
            admin: edge_config::DEFAULT_LISTEN_ADMIN,
            control: edge_config::DEFAULT_LISTEN_CONTROL,
        },
        admin: edge_config::AdminConfig {
            token: String::new(),
        },
        tls: paths(),
        public_tls: None,
        node_https: None,
    };
    let c = PolicyConfig::from(&b);
    assert_eq!(
        (c.lost_after, c.reconnect_window, c.ranking),
        (
            Duration::from_secs(7),
            Duration::from_secs(11),
            Ranking::PowerOfTwo
        )
    );
}

// ---- property tests ----

const NODE_IDS: [&str; 5] = ["n0", "n1", "n2", "n3", "n4"];
const REFS: [&str; 4] = ["s0", "s1", "s2", "s3"];

/// A node view at offsets (ms) from a base instant, with arbitrary fields.
#[derive(Debug, Clone)]
struct GenNode {
    id: usize,
    state: u8,
    overloaded: bool,
    age_ms: u64,
    capacity: u32,
    used: u32,
    cost: u32,
    streams: Vec<usize>,
    reservations: Vec<u64>,
    stream_reservations: Vec<u64>,
}

fn gen_node() -> impl Strategy<Value = GenNode> {
    (
        0..NODE_IDS.len(),
        0u8..3,
        prop::bool::weighted(0.15),
        prop_oneof![0u64..6000, Just(0u64), 0u64..20_000],
        prop_oneof![0u32..8000, Just(u32::MAX), Just(0u32)],
        prop_oneof![0u32..9000, Just(u32::MAX)],
        prop_oneof![0u32..3000, Just(0u32)],
        prop::collection::vec(0..REFS.len(), 0..3),
        prop::collection::vec(0u64..12, 0..3),
        prop::collection::vec(0u64..12, 0..3),
    )
        .prop_map(
            |(
                id,
                state,
                overloaded,
                age_ms,
                capacity,
                used,
                cost,
                streams,
                reservations,
                stream_reservations,
            )| GenNode {
                id,
                state,
                overloaded,
                age_ms,
                capacity,
                used,
                cost,
                streams,
                reservations,
                stream_reservations,
            },
        )
}

/// `now` is `base + 30 s`; a node reported `age_ms` before that.
fn view(g: &GenNode, base: Instant) -> NodeView {
    NodeView {
        id: NODE_IDS[g.id].into(),
        state: [
            AdminState::Ready,
            AdminState::Draining,
            AdminState::Cordoned,
        ][g.state as usize],
        overloaded: g.overloaded,
        last_report: base + Duration::from_secs(30) - Duration::from_millis(g.age_ms),
        capacity: g.capacity,
        used: g.used,
        stream_cost: g.cost,
        streams: g.streams.iter().map(|&i| REFS[i].to_string()).collect(),
        reservations: g.reservations.clone(),
        stream_reservations: g.stream_reservations.clone(),
    }
}

fn gen_pending() -> impl Strategy<Value = (u64, usize, u32, i64)> {
    (0u64..12, 0..NODE_IDS.len(), 0u32..3000, -5000i64..5000)
}

fn at(base: Instant, offset_ms: i64) -> Instant {
    let mid = base + Duration::from_secs(30);
    if offset_ms >= 0 {
        mid + Duration::from_millis(offset_ms as u64)
    } else {
        mid - Duration::from_millis(offset_ms.unsigned_abs())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    /// (a) Candidates are ready, fresh, not overloaded, with free units (capacity - used -
    /// pending not in the view) >= the stream's cost, each listed once.
    #[test]
    fn prop_candidates_respect_admission(
        gens in prop::collection::vec(gen_node(), 0..7),
        pendings in prop::collection::vec(gen_pending(), 0..6),
        stream in prop::option::of(0..REFS.len()),
        units in prop::option::of(prop_oneof![0u32..3000, Just(u32::MAX)]),
        seed in any::<u64>(),
        two in any::<bool>(),
    ) {
        let base = Instant::now();
        let now = at(base, 0);
        let ranking = if two { Ranking::PowerOfTwo } else { Ranking::LeastLoaded };
        let mut p = Policy::new(cfg(ranking));
        for &(id, n, u, off) in &pendings {
            p.add_pending(pending(id, NODE_IDS[n], u, at(base, off)));
        }
        let nodes: Vec<NodeView> = gens.iter().map(|g| view(g, base)).collect();
        let c = p.candidates(&nodes, stream.map(|i| REFS[i]), units, seed, now);
        let mut seen = std::collections::HashSet::new();
        for id in &c {
            prop_assert!(seen.insert(id.clone()), "listed twice: {}", id);
            let n = nodes.iter().find(|n| &n.id == id).expect("a candidate is a given node");
            prop_assert_eq!(n.state, AdminState::Ready);
            prop_assert!(!n.overloaded);
            prop_assert!(now.saturating_duration_since(n.last_report) < Duration::from_secs(5));
            let pend: i64 = p.pending().iter()
                .filter(|q| q.node == n.id && q.expires > now
                    && !n.reservations.contains(&q.id) && !n.stream_reservations.contains(&q.id))
                .map(|q| i64::from(q.milli_units)).sum();
            let free = i64::from(n.capacity) - i64::from(n.used) - pend;
            prop_assert!(free > 0);
            prop_assert!(free >= i64::from(units.unwrap_or(n.stream_cost)));
            prop_assert_eq!(p.status(n, now) == NodeStatus::Ready, free >= i64::from(n.stream_cost));
        }
        // And every admissible node is listed (refusal only when nobody can take it).
        for n in &nodes {
            if nodes.iter().find(|m| m.id == n.id).is_some_and(|first| std::ptr::eq(first, n))
                && p.admits(n, units.unwrap_or(n.stream_cost), now).is_some()
            {
                prop_assert!(c.contains(&n.id));
            }
        }
    }

    /// (c) A stream live on a ready node with room goes there first, whatever the ranking.
    #[test]
    fn prop_affinity_first(
        gens in prop::collection::vec(gen_node(), 1..7),
        home in 0..NODE_IDS.len(),
        seed in any::<u64>(),
        two in any::<bool>(),
        remembered in any::<bool>(),
    ) {
        let base = Instant::now();
        let now = at(base, 0);
        let ranking = if two { Ranking::PowerOfTwo } else { Ranking::LeastLoaded };
        let mut p = Policy::new(cfg(ranking));
        // Only `home` lists "s0"; it is ready, fresh and has room.
        let mut nodes: Vec<NodeView> = gens.iter()
            .map(|g| {
                let mut v = view(g, base);
                v.streams.retain(|s| s != "s0");
                v
            })
            .filter(|v| v.id != NODE_IDS[home])
            .collect();
        let mut h = node(NODE_IDS[home], 4000, 1000, now);
        h.stream_cost = 1000;
        h.streams = vec!["s0".into()];
        nodes.insert(seed as usize % (nodes.len() + 1), h.clone());
        if remembered {
            // Seen there a moment ago; the encoder dropped since.
            p.observe(&nodes, at(base, -1000));
            let i = nodes.iter().position(|n| n.id == h.id).expect("home is listed");
            nodes[i].streams.clear();
            p.observe(&nodes, now);
        }
        let c = p.candidates(&nodes, Some("s0"), None, seed, now);
        prop_assert_eq!(c.first().map(String::as_str), Some(NODE_IDS[home]));
    }

    /// (d) Nothing panics on arbitrary inputs and sequences; views are only read.
    #[test]
    fn prop_arbitrary_sequences_never_panic(
        steps in prop::collection::vec(
            (
                prop::collection::vec(gen_node(), 0..5),
                prop::collection::vec(gen_pending(), 0..3),
                -40_000i64..40_000,
                any::<u64>(),
                prop::option::of(any::<u32>()),
                0u8..4,
            ),
            1..12,
        ),
        lost_ms in prop_oneof![Just(0u64), 0u64..20_000, Just(u64::MAX)],
        window_ms in prop_oneof![Just(0u64), 0u64..60_000, Just(u64::MAX)],
    ) {
        let base = Instant::now();
        let mut p = Policy::new(PolicyConfig {
            lost_after: Duration::from_millis(lost_ms),
            reconnect_window: Duration::from_millis(window_ms),
            ranking: if window_ms % 2 == 0 { Ranking::PowerOfTwo } else { Ranking::LeastLoaded },
        });
        for (gens, pendings, off, seed, units, what) in steps {
            let now = at(base, off);
            let nodes: Vec<NodeView> = gens.iter().map(|g| view(g, base)).collect();
            let before: Vec<Vec<String>> = nodes.iter().map(|n| n.streams.clone()).collect();
            for &(id, n, u, poff) in &pendings {
                p.add_pending(pending(id, NODE_IDS[n], u, at(base, poff)));
            }
            match what {
                0 => p.observe(&nodes, now),
                1 => { let _ = p.candidates(&nodes, Some(REFS[seed as usize % REFS.len()]), units, seed, now); }
                2 => p.remove_pending(seed % 12),
                _ => {
                    for n in &nodes {
                        let _ = (p.status(n, now), p.free_units(n, now));
                    }
                    let _ = p.affinity(REFS[seed as usize % REFS.len()], now);
                }
            }
            let _ = p.candidates(&nodes, None, units, seed, now);
            let after: Vec<Vec<String>> = nodes.iter().map(|n| n.streams.clone()).collect();
            prop_assert_eq!(before, after);
        }
    }
}

// ---- (b) several balancers, shared nodes that enforce their capacity ----

/// A node as the simulation models it: the node itself refuses what does not fit.
#[derive(Debug)]
struct SimNode {
    id: String,
    capacity: u32,
    /// (reservation id, units, expires)
    reservations: Vec<(u64, u32, Instant)>,
    /// (stream id, units, reservation id)
    streams: Vec<(u64, u32, u64)>,
}

impl SimNode {
    fn expire(&mut self, now: Instant) {
        self.reservations.retain(|r| r.2 > now);
    }
    fn used(&self) -> u32 {
        self.reservations.iter().map(|r| r.1).sum::<u32>()
            + self.streams.iter().map(|s| s.1).sum::<u32>()
    }
    fn reserve(&mut self, id: u64, units: u32, expires: Instant, now: Instant) -> bool {
        self.expire(now);
        if self.used() + units <= self.capacity {
            self.reservations.push((id, units, expires));
            true
        } else {
            false
        }
    }
    fn report(&mut self, now: Instant) -> NodeView {
        self.expire(now);
        NodeView {
            id: self.id.clone(),
            state: AdminState::Ready,
            overloaded: false,
            last_report: now,
            capacity: self.capacity,
            used: self.used(),
            stream_cost: 1000,
            streams: self.streams.iter().map(|s| format!("s{}", s.0)).collect(),
            reservations: self.reservations.iter().map(|r| r.0).collect(),
            stream_reservations: self.streams.iter().map(|s| s.2).collect(),
        }
    }
}

#[derive(Debug, Default)]
struct SimBalancer {
    placer: Policy,
    views: std::collections::BTreeMap<String, NodeView>,
    /// (deliver at, report): delivered in arrival order, so older reports can overwrite newer.
    inbox: Vec<(Instant, NodeView)>,
}

impl SimBalancer {
    fn deliver(&mut self, now: Instant) {
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.inbox)
            .into_iter()
            .partition(|(t, _)| *t <= now);
        self.inbox = later;
        for (_, v) in due {
            self.views.insert(v.id.clone(), v);
        }
        let nodes: Vec<NodeView> = self.views.values().cloned().collect();
        self.placer.observe(&nodes, now);
    }
}

#[derive(Debug, Clone)]
enum Op {
    Place {
        balancer: usize,
        units: u32,
    },
    Connect {
        pick: usize,
    },
    End {
        pick: usize,
    },
    /// A report from `node` to `balancer`, delayed by `delay_ms`, or lost (None).
    Report {
        node: usize,
        balancer: usize,
        delay_ms: Option<u64>,
    },
    Tick {
        ms: u64,
    },
}

fn gen_op(balancers: usize, nodes: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..balancers, prop_oneof![Just(1000u32), 1u32..2500]).prop_map(|(balancer, units)| Op::Place { balancer, units }),
        2 => any::<usize>().prop_map(|pick| Op::Connect { pick }),
        1 => any::<usize>().prop_map(|pick| Op::End { pick }),
        4 => (0..nodes, 0..balancers, prop::option::weighted(0.8, 0u64..3000))
            .prop_map(|(node, balancer, delay_ms)| Op::Report { node, balancer, delay_ms }),
        2 => (1u64..1500).prop_map(|ms| Op::Tick { ms }),
    ]
}

/// How long a node holds a reservation.
const SIM_TTL: Duration = Duration::from_secs(4);

/// Run a simulation; returns (placed, refused, first-candidate refusals).
fn simulate(
    capacities: &[u32],
    balancers: usize,
    ops: &[Op],
    ranking: Ranking,
    fresh_reports_each_tick: bool,
) -> Result<(usize, usize, usize), TestCaseError> {
    let mut now = Instant::now();
    let mut nodes: Vec<SimNode> = capacities
        .iter()
        .enumerate()
        .map(|(i, &capacity)| SimNode {
            id: format!("n{i}"),
            capacity,
            reservations: vec![],
            streams: vec![],
        })
        .collect();
    let mut bals: Vec<SimBalancer> = (0..balancers)
        .map(|_| SimBalancer {
            placer: Policy::new(PolicyConfig {
                lost_after: Duration::from_secs(5),
                reconnect_window: Duration::from_secs(30),
                ranking,
            }),
            ..Default::default()
        })
        .collect();
    for b in &mut bals {
        for n in &mut nodes {
            b.inbox.push((now, n.report(now)));
        }
        b.deliver(now);
    }
    // stream id -> nodes that accepted it
    let mut accepted: std::collections::HashMap<u64, Vec<String>> = Default::default();
    let (mut placed, mut refused, mut first_refusals) = (0, 0, 0);
    let mut next = 0u64;
    for op in ops {
        match op.clone() {
            Op::Place { balancer, units } => {
                next += 1;
                let b = &mut bals[balancer];
                b.deliver(now);
                let views: Vec<NodeView> = b.views.values().cloned().collect();
                let cands =
                    b.placer
                        .candidates(&views, Some(&format!("s{next}")), Some(units), next, now);
                let mut ok = false;
                for (i, c) in cands.iter().enumerate() {
                    let n = nodes
                        .iter_mut()
                        .find(|n| &n.id == c)
                        .expect("candidates are known nodes");
                    if n.reserve(next, units, now + SIM_TTL, now) {
                        b.placer.add_pending(Pending {
                            id: next,
                            node: c.clone(),
                            milli_units: units,
                            expires: now + SIM_TTL,
                        });
                        accepted.entry(next).or_default().push(c.clone());
                        ok = true;
                        break;
                    }
                    if i == 0 {
                        first_refusals += 1;
                    }
                }
                if ok {
                    placed += 1
                } else {
                    refused += 1
                }
            }
            Op::Connect { pick } => {
                let all: Vec<(usize, usize)> = nodes
                    .iter()
                    .enumerate()
                    .flat_map(|(i, n)| (0..n.reservations.len()).map(move |j| (i, j)))
                    .collect();
                if !all.is_empty() {
                    let (i, j) = all[pick % all.len()];
                    let n = &mut nodes[i];
                    n.expire(now);
                    if j < n.reservations.len() {
                        let (id, units, _) = n.reservations.remove(j);
                        n.streams.push((id, units, id));
                    }
                }
            }
            Op::End { pick } => {
                let all: Vec<(usize, usize)> = nodes
                    .iter()
                    .enumerate()
                    .flat_map(|(i, n)| (0..n.streams.len()).map(move |j| (i, j)))
                    .collect();
                if !all.is_empty() {
                    let (i, j) = all[pick % all.len()];
                    nodes[i].streams.remove(j);
                }
            }
            Op::Report {
                node,
                balancer,
                delay_ms,
            } => {
                let r = nodes[node].report(now);
                if let Some(d) = delay_ms {
                    bals[balancer]
                        .inbox
                        .push((now + Duration::from_millis(d), r));
                }
            }
            Op::Tick { ms } => {
                now += Duration::from_millis(ms);
                if fresh_reports_each_tick {
                    for b in &mut bals {
                        for n in &mut nodes {
                            b.inbox.push((now, n.report(now)));
                        }
                    }
                }
                for b in &mut bals {
                    b.deliver(now);
                }
            }
        }
        for n in &mut nodes {
            n.expire(now);
            prop_assert!(
                n.used() <= n.capacity,
                "{} over capacity: {} > {}",
                n.id,
                n.used(),
                n.capacity
            );
        }
    }
    for (stream, on) in &accepted {
        prop_assert_eq!(on.len(), 1, "stream {} accepted by {:?}", stream, on);
    }
    // Each reservation or stream id lives on exactly one node.
    let mut ids = std::collections::HashSet::new();
    for n in &nodes {
        for r in &n.reservations {
            prop_assert!(ids.insert(r.0));
        }
        for s in &n.streams {
            prop_assert!(ids.insert(s.0));
        }
    }
    prop_assert_eq!(
        placed + refused,
        ops.iter().filter(|o| matches!(o, Op::Place { .. })).count()
    );
    Ok((placed, refused, first_refusals))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// (b) Several balancers, each with its own Policy, placing on shared nodes with
    /// reports late, out of order or lost: no node ever exceeds its capacity, and every
    /// placed stream was accepted by exactly one node.
    #[test]
    fn prop_many_balancers_never_overfill(
        capacities in prop::collection::vec(0u32..6000, 1..5),
        balancers in 1usize..4,
        ops in prop::collection::vec(gen_op(3, 4), 1..120),
        two in any::<bool>(),
    ) {
        let ops: Vec<Op> = ops.into_iter().map(|o| match o {
            Op::Place { balancer, units } => Op::Place { balancer: balancer % balancers, units },
            Op::Report { node, balancer, delay_ms } => Op::Report { node: node % capacities.len(), balancer: balancer % balancers, delay_ms },
            o => o,
        }).collect();
        let ranking = if two { Ranking::PowerOfTwo } else { Ranking::LeastLoaded };
        simulate(&capacities, balancers, &ops, ranking, false)?;
    }

    /// Race-freedom on the balancer's side: one balancer with current reports (each tick)
    /// never picks a first candidate that then refuses, however fast it places in between.
    #[test]
    fn prop_one_balancer_with_pendings_never_gets_refused(
        capacities in prop::collection::vec(0u32..6000, 1..5),
        ops in prop::collection::vec(gen_op(1, 4), 1..120),
        two in any::<bool>(),
    ) {
        let ops: Vec<Op> = ops.into_iter()
            .map(|o| match o {
                Op::Report { node, balancer, .. } => Op::Report { node: node % capacities.len(), balancer, delay_ms: Some(0) },
                // Ticks shorter than the reservation TTL, so a report sees every conversion.
                o => o,
            })
            .collect();
        let ranking = if two { Ranking::PowerOfTwo } else { Ranking::LeastLoaded };
        let (_, _, first_refusals) = simulate(&capacities, 1, &ops, ranking, true)?;
        prop_assert_eq!(first_refusals, 0);
    }
}
