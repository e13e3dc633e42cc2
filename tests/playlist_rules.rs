//! End to end: every media playlist of a live stream with a ladder, followed through a balancer
//! for a minute the way an LL-HLS player follows it (blocking reloads of the hinted part), keeps
//! the playlist rules of `packager::rules` on its own, over time and across renditions, across
//! a publisher's reconnect: TARGETDURATION never changes, every hinted part appears, the same
//! MSN has the same PDT in every rendition and no rendition runs ahead of another, and each
//! segment's PDT is the node's clock when its first frame arrived.
// End-to-end tests and benchmarks drive real processes (encoders, players, `edge`) on real
// time; the ban on the std clock (clippy.toml) is for product code.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{cluster::*, *};
use packager::rules::{self, Expect, History, Playlist};

/// How long the playlists are followed: the minute issue 10 asks for.
const FOLLOW: Duration = Duration::from_secs(60);
/// The first publisher's media time: it ends there and a second one takes over the stream (in
/// the node's reconnect window), about halfway through [`FOLLOW`].
const FIRST_PUBLISH: Duration = Duration::from_secs(30);
/// A blocking reload is held by the node at most 3 target durations (6 s) and by the
/// balancer a little longer; a request that takes longer than this is a failure.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(20);
/// How much of a part's publication the test may miss when it reads the first frame's arrival
/// off the playlist: the part is published when the frame after it arrives, so its listing,
/// less its duration, is the first frame's arrival moved by the jitter between two frames'
/// delays, and the playlist response's own time on loopback and through the balancer.
const ARRIVAL_MEASUREMENT_SLACK: f64 = 0.05;
/// The rule: a segment's PDT is its first frame's arrival on the node's clock within 100 ms.
const PDT_ARRIVAL_TOLERANCE: f64 = 0.1;
/// A blocking request answered sooner than this after it was sent found its part already
/// there: its response time says nothing about when the part was published.
const HELD_AT_LEAST: Duration = Duration::from_millis(20);
/// How often the renditions' latest playlists are compared with each other.
const ALIGN_EVERY: Duration = Duration::from_millis(250);

/// One playlist response.
struct Fetch {
    /// When the request was sent and its response read.
    sent: Instant,
    got: Instant,
    /// `got` on the wall clock (the node's clock: same machine).
    got_wall: f64,
    /// The part the request blocked for (`_HLS_msn`, `_HLS_part`), if it was a blocking one.
    asked: Option<(u64, u64)>,
    text: String,
}

/// A follower's playlists: its name, whether it asked for delta updates, each response parsed.
type Followed = (String, bool, Vec<(Fetch, Playlist)>);

fn wall_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Follows the media playlist at `url` until `until` as an LL-HLS player does: a plain request,
/// then a blocking reload of each preload-hinted part (`_HLS_skip=YES` too if `delta`). A
/// request the node gives up holding (503, while the publisher reconnects) starts over with a
/// plain request; any other failure is returned.
fn follow(url: &str, delta: bool, until: Instant) -> Result<Vec<Fetch>, String> {
    let mut out = Vec::new();
    let mut next: Option<(u64, u64)> = None;
    while Instant::now() < until {
        let asked = next;
        let req = match next {
            None => url.to_string(),
            Some((m, p)) => {
                let u = blocking_reload_url(url, m, p as usize);
                if delta {
                    format!("{u}&_HLS_skip=YES")
                } else {
                    u
                }
            }
        };
        let sent = Instant::now();
        let r = http_get(&req, RELOAD_TIMEOUT).map_err(|e| format!("{req}: {e}"))?;
        let got = Instant::now();
        let got_wall = wall_now();
        match r.status {
            200 => {}
            503 => {
                next = None;
                continue;
            }
            s => return Err(format!("{req}: HTTP {s}: {}", r.text())),
        }
        let text = r.text();
        let pl = rules::parse(&text).map_err(|e| format!("{req}: {e}\n{text}"))?;
        next = pl
            .preload_hint
            .as_ref()
            .and_then(|(_, u)| rules::part_position(u));
        out.push(Fetch {
            sent,
            got,
            got_wall,
            asked,
            text,
        });
        if pl.ended {
            break;
        }
    }
    Ok(out)
}

#[test]
fn playlists_followed_through_a_balancer_keep_the_rules_for_a_minute() {
    let c = Cluster::new(1, 1);
    let b = c.balancer(1, "5s");
    // The product's defaults: its ladder and 200 ms parts. 10 units: a 480p source and its
    // one smaller rung cost about 2.
    let _node = c.node_with(1, 10, &[&b], |t| {
        *t = t
            .replace("ladder = []\n", "")
            .replace("part_target = \"333ms\"", "part_target = \"200ms\"");
    });
    wait_nodes(&b, &["n1"]);
    let publish = |duration| {
        Encoder::ffmpeg_rtmp(
            &b.rtmp_url(&key(0)),
            EncOpts {
                duration,
                ..EncOpts::default()
            },
        )
    };
    let mut first = publish(FIRST_PUBLISH);

    // Every rendition the multivariant lists, once each has two segments.
    let mv_url = b.playlist_url(&pid(0));
    let mv = wait_for(
        "a multivariant playlist with audio",
        FIRST_SEGMENT_TIMEOUT,
        || {
            let r = http_get(&mv_url, HTTP_TIMEOUT).ok()?;
            let mv = parse_multivariant(&r.text()).ok()?;
            mv.audio_uri().is_some().then_some(mv)
        },
    );
    let mut renditions: Vec<(String, String, Track)> = mv
        .variants
        .iter()
        .map(|v| (v.uri.clone(), Track::Video))
        .chain(mv.audio_uri().map(|u| (u.to_string(), Track::Audio)))
        .map(|(uri, track)| {
            let name = uri.split('/').next().unwrap_or(&uri).to_string();
            (name, resolve_url(&mv_url, &uri), track)
        })
        .collect();
    renditions.sort_by(|a, b| a.0.cmp(&b.0));
    let names: Vec<&str> = renditions.iter().map(|(n, ..)| n.as_str()).collect();
    assert!(
        names.contains(&"source") && names.contains(&"audio") && names.len() >= 3,
        "renditions {names:?}: the source, a transcoded rung and the audio"
    );
    for (name, url, _) in &renditions {
        wait_for(
            format!("{name}: two segments"),
            FIRST_SEGMENT_TIMEOUT,
            || {
                let r = http_get(url, HTTP_TIMEOUT).ok()?;
                let pl = rules::parse(&r.text()).ok()?;
                (pl.segments.iter().filter(|s| s.uri.is_some()).count() >= 2).then_some(())
            },
        );
    }

    // One follower per rendition, and a second one on the source asking for delta updates.
    let until = Instant::now() + FOLLOW;
    let followers: Vec<_> = renditions
        .iter()
        .map(|(name, url, _)| (name.clone(), url.clone(), false))
        .chain(std::iter::once((
            "source (delta)".to_string(),
            renditions
                .iter()
                .find(|(n, ..)| n == "source")
                .map(|(_, u, _)| u.clone())
                .unwrap_or_default(),
            true,
        )))
        .map(|(name, url, delta)| {
            (
                name,
                delta,
                std::thread::spawn(move || follow(&url, delta, until)),
            )
        })
        .collect();

    // The publisher reconnects: the first ends its media, a second takes the same key.
    wait_for("the first publisher to end", FIRST_PUBLISH * 2, || {
        (!first.is_running()).then_some(())
    });
    let mut second = publish(FOLLOW);

    let mut errs: Vec<String> = Vec::new();
    let mut fetched: Vec<Followed> = Vec::new();
    for (name, delta, h) in followers {
        let fetches = h
            .join()
            .unwrap_or_else(|_| Err("follower panicked".into()))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let track = renditions
            .iter()
            .find(|(n, ..)| name.starts_with(n.as_str()))
            .map_or(Track::Video, |r| r.2);
        let expect = Expect {
            keyframe_segments: track == Track::Video,
            ..Expect::default()
        };
        let mut history = History::default();
        let mut checked = Vec::new();
        for f in fetches {
            match rules::check(&f.text, &expect) {
                Ok(pl) => {
                    for e in history.observe(&pl) {
                        errs.push(format!("{name}: {e}"));
                    }
                    checked.push((f, pl));
                }
                Err(es) => errs.extend(es.iter().map(|e| format!("{name}: {e}\n{}", f.text))),
            }
        }
        println!("{name}: {} playlists", checked.len());
        fetched.push((name, delta, checked));
    }
    assert!(second.is_running(), "ffmpeg: {}", second.log_text());

    // Across renditions: every ALIGN_EVERY, the latest playlist each follower had then.
    let full: Vec<&Followed> = fetched.iter().filter(|(_, delta, _)| !delta).collect();
    let start = full
        .iter()
        .filter_map(|(_, _, v)| v.first().map(|(f, _)| f.got))
        .max()
        .expect("playlists fetched");
    let mut at = start;
    let mut comparisons = 0;
    while at < until {
        let latest: Vec<(&str, &Playlist)> = full
            .iter()
            .filter_map(|(n, _, v)| {
                v.iter()
                    .rev()
                    .find(|(f, _)| f.got <= at)
                    .map(|(_, pl)| (n.as_str(), pl))
            })
            .collect();
        for e in rules::check_aligned(&latest, &Expect::default()) {
            errs.push(format!("at +{:.2} s: {e}", (at - start).as_secs_f64()));
        }
        comparisons += 1;
        at += ALIGN_EVERY;
    }

    // The source's PDTs against the node's clock: each segment's first part, listed in the
    // response to the blocking request that waited for it, less its duration, is when its
    // first frame arrived (up to ARRIVAL_MEASUREMENT_SLACK).
    let (_, _, source) = full
        .iter()
        .find(|(n, ..)| n == "source")
        .expect("source followed");
    let mut offsets = Vec::new();
    for (f, pl) in source {
        let Some((msn, 0)) = f.asked else { continue };
        if f.got - f.sent < HELD_AT_LEAST {
            continue;
        }
        let Some(seg) = pl.segment(msn) else { continue };
        let (Some(pdt), Some(p0)) = (seg.pdt, seg.parts.first()) else {
            continue;
        };
        let arrival = f.got_wall - p0.duration;
        offsets.push((msn, arrival - pdt));
    }
    println!("source: first frame's arrival minus PDT, s, per segment: {offsets:?}");
    for (msn, d) in &offsets {
        if d.abs() > PDT_ARRIVAL_TOLERANCE + ARRIVAL_MEASUREMENT_SLACK {
            errs.push(format!(
                "source segment {msn}: PDT {:.3} s off its first frame's arrival",
                -d
            ));
        }
    }
    // Most of the minute's segments measured (30 at 2 s), and the follower saw the stream on:
    // its newest MSN moved on by about as many.
    assert!(
        offsets.len() >= 20,
        "only {} segments' arrivals measured",
        offsets.len()
    );
    assert!(comparisons >= 200, "{comparisons} alignment checks");
    // The reconnect was followed: the source's playlists showed its discontinuity.
    assert!(
        source
            .iter()
            .any(|(_, pl)| pl.segments.iter().any(|s| s.discontinuity)),
        "no discontinuity seen across the publisher's reconnect"
    );
    assert!(
        errs.is_empty(),
        "{} violations, the first ones:\n{}",
        errs.len(),
        errs.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
}

/// How long a rung may take to list the segments the grid test reads: the stream's start, the
/// grid's first cut (2.25 s after the first keyframe) and five 2 s segments, on a shared machine.
const GRID_SEGMENTS_TIMEOUT: Duration = Duration::from_secs(60);

/// A source whose keyframes are 6 s apart (an encoder left on a long default), with two
/// B-frames between references as OBS's x264 makes them, next to 2 s segments and a ladder: from its first GOP on, every rendition's segments are cut every 2 s,
/// the transcoded renditions' on keyframes made there (every segment independent), the
/// source's without one; the same MSN covers the same media in all, and the stream's health
/// says so.
#[test]
fn a_long_keyframe_interval_puts_every_rendition_s_segments_on_a_grid() {
    // The test ladder (360p, 240p) at 200 ms parts; plain playlist requests answered at once.
    let node = Node::start(|c| {
        *c = c
            .replace("part_target = \"333ms\"", "part_target = \"200ms\"")
            .replace(
                "segment_target = \"2s\"\n",
                "segment_target = \"2s\"\nkeyframe_join = false\n",
            );
    });
    let mut enc = Encoder::ffmpeg_rtmp(
        &node.rtmp_url("test-stream-key-1"),
        EncOpts {
            gop: 180,
            extra: vec!["-bf".into(), "2".into()],
            ..EncOpts::default()
        },
    );
    let names = ["source", "360p", "240p", "audio"];
    let fetch = |name: &str| -> Option<Playlist> {
        let r = http_get(&node.media_playlist_url("one", name), HTTP_TIMEOUT).ok()?;
        (r.status == 200)
            .then(|| rules::parse(&r.text()).ok())
            .flatten()
    };
    wait_for("five complete 240p segments", GRID_SEGMENTS_TIMEOUT, || {
        let pl = fetch("240p")?;
        (pl.segments.iter().filter(|s| s.uri.is_some()).count() >= 5).then_some(())
    });
    assert!(enc.is_running(), "ffmpeg: {}", enc.log_text());
    let mut errs = Vec::new();
    let mut playlists = Vec::new();
    for name in names {
        let text = http_get(&node.media_playlist_url("one", name), HTTP_TIMEOUT)
            .map(|r| r.text())
            .unwrap_or_default();
        // The transcoded renditions' segments all start with a keyframe; the source's cannot.
        let expect = Expect {
            keyframe_segments: name == "360p" || name == "240p",
            ..Expect::default()
        };
        match rules::check(&text, &expect) {
            Ok(pl) => playlists.push((name, pl)),
            Err(es) => errs.extend(es.into_iter().map(|e| format!("{name}: {e}\n{text}"))),
        }
    }
    assert!(errs.is_empty(), "{}", errs.join("\n"));
    let refs: Vec<(&str, &Playlist)> = playlists.iter().map(|(n, p)| (*n, p)).collect();
    let aligned = rules::check_aligned(&refs, &Expect::default());
    assert!(aligned.is_empty(), "{}", aligned.join("\n"));
    // Every complete segment after the stream's first is 2 s long to a frame in every video
    // rendition (the first ends at the grid's first cut, 2.25 s in), the same MSN the same
    // length everywhere: the source's 6 s GOP no longer shows.
    let durations = |pl: &Playlist| -> Vec<(u64, f64)> {
        pl.segments
            .iter()
            .filter(|s| s.uri.is_some() && s.msn > 0)
            .map(|s| (s.msn, s.duration))
            .collect()
    };
    let source = durations(&playlists[0].1);
    assert!(source.len() >= 4, "{source:?}");
    for (name, pl) in &playlists[..3] {
        for (msn, d) in durations(pl) {
            assert!(
                (1.95..=2.04).contains(&d),
                "{name} segment {msn} lasts {d} s"
            );
            if let Some((_, sd)) = source.iter().find(|(m, _)| *m == msn) {
                assert!(
                    (d - sd).abs() < 0.002,
                    "{name} segment {msn}: {d} s, source {sd} s"
                );
            }
        }
    }
    // The source's segments start without a keyframe (but where its own keyframe falls on the
    // grid): most of its first parts are not independent.
    let dependent = playlists[0]
        .1
        .segments
        .iter()
        .filter(|s| s.msn > 0 && s.parts.first().is_some_and(|p| !p.independent))
        .count();
    assert!(dependent >= 1, "{:?}", playlists[0].1.segments);
    // The health says what the stream does about it.
    let s = wait_for("the keyframe issue", Duration::from_secs(10), || {
        node.stream("one")
            .filter(|s| s["issues"].as_array().is_some_and(|a| !a.is_empty()))
    });
    let msg = s["issues"][0]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("set it to 2 s") && msg.contains("every rendition's segments start every 2 s"),
        "{msg}"
    );
    assert!(enc.is_running(), "ffmpeg: {}", enc.log_text());
}
