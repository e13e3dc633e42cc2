//! Unit tests of `server` (kept beside it; compiled only for tests).

use super::*;
use crate::fmp4::tests::{aac_info, h264_info};
use crate::playlist::tests::attr;
use crate::track::tests::{audio_plan, audio_sample, video_plan, video_sample};
use crate::{PackagerConfig, StreamHandle};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};

fn get(path: &str) -> Request<()> {
    Request::builder().uri(path).body(()).unwrap()
}

async fn bytes(r: Response<Body>) -> Bytes {
    r.into_body().collect().await.unwrap().to_bytes()
}

async fn body(r: Response<Body>) -> String {
    String::from_utf8_lossy(&bytes(r).await).into_owned()
}

/// Small targets so blocking tests are fast: 100 ms parts, 1 s segments.
fn fast_origin() -> Origin {
    Origin::new(PackagerConfig {
        part_target: Duration::from_millis(100),
        segment_target: Duration::from_secs(1),
        window_segments: 6,
        ended_retention: Duration::from_secs(60),
        ready_timeout: Duration::from_millis(300),
        keyframe_join: false,
        part_hold_back_parts: 3,
    })
}

fn started(o: &Origin, frames: u64) -> StreamHandle {
    let h = o.publish(
        "abc",
        vec![video_plan("720p"), video_plan("360p"), audio_plan()],
    );
    h.configure("720p", h264_info().config).unwrap();
    h.configure("360p", h264_info().config).unwrap();
    h.configure("audio", aac_info().config).unwrap();
    for i in 0..frames {
        h.push("720p", video_sample(i, None)).unwrap();
        h.push("360p", video_sample(i, None)).unwrap();
    }
    for i in 0..(frames * 48_000 / 1024 / 30) {
        h.push("audio", audio_sample(i)).unwrap();
    }
    h
}

#[tokio::test]
async fn methods_cors_and_not_found() {
    let o = fast_origin();
    let _h = started(&o, 40);
    let r = o
        .handle(
            Request::builder()
                .method("POST")
                .uri("/live/abc/index.m3u8")
                .body(())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers()[header::ALLOW], ALLOWED_METHODS);
    let r = o
        .handle(
            Request::builder()
                .method("OPTIONS")
                .uri("/live/abc/index.m3u8")
                .body(())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(r.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    assert!(r.headers()[header::ACCESS_CONTROL_ALLOW_METHODS]
        .to_str()
        .unwrap()
        .contains("GET"));
    for p in [
        "/live/nope/index.m3u8",
        "/live/abc/1080p/index.m3u8",
        "/live/abc/720p/seg99.m4s",
        "/live/abc/720p/init5.mp4",
        "/live/abc/720p/part0.99.m4s",
        "/elsewhere",
    ] {
        let r = o.handle(get(p)).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{p}");
        assert_eq!(r.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    }
    let r = o.handle(get("/live/abc/720p/init.mp4")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[header::CONTENT_TYPE], INIT_TYPE);
    assert!(r.headers()[header::CACHE_CONTROL]
        .to_str()
        .unwrap()
        .contains("max-age=3600"));
    let head = o
        .handle(
            Request::builder()
                .method("HEAD")
                .uri("/live/abc/720p/init.mp4")
                .body(())
                .unwrap(),
        )
        .await;
    assert_eq!(head.status(), StatusCode::OK);
    let len: usize = head.headers()[header::CONTENT_LENGTH]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(len, bytes(r).await.len());
    assert_eq!(bytes(head).await.len(), 0);
}

#[tokio::test]
async fn multivariant_lists_ready_renditions() {
    let o = fast_origin();
    let _h = started(&o, 40);
    let r = o.handle(get("/live/abc/index.m3u8")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[header::CONTENT_TYPE], PLAYLIST_TYPE);
    let text = body(r).await;
    let lines: Vec<&str> = text.lines().collect();
    // Not claimed: a long-GOP source gets segments cut at non-keyframes (see `track`).
    assert!(!lines.contains(&"#EXT-X-INDEPENDENT-SEGMENTS"));
    assert!(lines.iter().any(|l| l.starts_with(
        "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",NAME=\"audio\",DEFAULT=YES,AUTOSELECT=YES"
    ) && l.ends_with("URI=\"audio/index.m3u8\"")));
    let infs: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("#EXT-X-STREAM-INF"))
        .collect();
    assert_eq!(infs.len(), 2);
    assert_eq!(attr(infs[0], "CODECS"), Some("avc1.64001f,mp4a.40.2"));
    assert_eq!(attr(infs[0], "BANDWIDTH"), Some("2128000"));
    assert_eq!(attr(infs[0], "RESOLUTION"), Some("1280x720"));
    assert_eq!(attr(infs[0], "FRAME-RATE"), Some("30.000"));
    assert_eq!(attr(infs[0], "AUDIO"), Some("audio"));
    assert!(text.contains("\n720p/index.m3u8\n"));
    assert!(text.contains("\n360p/index.m3u8\n"));
}

#[tokio::test]
async fn multivariant_waits_then_503_when_nothing_ready() {
    let o = fast_origin();
    let _h = o.publish("abc", vec![video_plan("720p")]);
    let t = Instant::now();
    let r = o.handle(get("/live/abc/index.m3u8")).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers().contains_key(header::RETRY_AFTER));
    assert!(t.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn media_playlist_has_ll_hls_tags() {
    let o = fast_origin();
    let _h = started(&o, 100);
    let r = o.handle(get("/live/abc/720p/index.m3u8")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[header::CACHE_CONTROL], "no-cache");
    let text = body(r).await;
    // 100 ms configured + PART_TARGET_SLACK.
    assert!(
        text.contains("#EXT-X-PART-INF:PART-TARGET=0.10500"),
        "{text}"
    );
    assert!(text.contains("#EXT-X-MAP:URI=\"init.mp4\""));
    assert!(text.contains("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part"));
    assert!(text.contains("#EXT-X-RENDITION-REPORT:URI=\"../360p/index.m3u8\""));
    assert!(text.contains("#EXT-X-RENDITION-REPORT:URI=\"../audio/index.m3u8\""));
    assert!(!text.contains("../720p/"));
    // Every listed part and segment is served.
    for line in text.lines() {
        let uri = if line.starts_with("#EXT-X-PART:") {
            attr(line, "URI").map(str::to_string)
        } else if !line.starts_with('#') {
            Some(line.to_string())
        } else {
            None
        };
        if let Some(uri) = uri {
            let r = o.handle(get(&format!("/live/abc/720p/{uri}"))).await;
            assert_eq!(r.status(), StatusCode::OK, "{uri}");
            assert_eq!(r.headers()[header::CONTENT_TYPE], SEGMENT_TYPE);
        }
    }
}

#[tokio::test]
async fn blocking_reload_rules() {
    let o = fast_origin();
    let h = started(&o, 40);
    let r = o.handle(get("/live/abc/720p/index.m3u8?_HLS_part=1")).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(body(r).await.contains("_HLS_msn"));
    let r = o.handle(get("/live/abc/720p/index.m3u8?_HLS_msn=x")).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let (last_msn, last_part) = {
        let s = o.stream("abc").unwrap();
        let st = s.state.lock();
        st.track("720p").unwrap().last_part().unwrap()
    };
    let r = o
        .handle(get(&format!(
            "/live/abc/720p/index.m3u8?_HLS_msn={}",
            last_msn + 3
        )))
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Already available: immediate, cacheable briefly by shared caches only.
    let r = o
        .handle(get(&format!(
            "/live/abc/720p/index.m3u8?_HLS_msn={last_msn}&_HLS_part={last_part}"
        )))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()[header::CACHE_CONTROL],
        "public, max-age=0, s-maxage=6"
    );
    // The next part: blocks until pushed.
    let next = format!(
        "/live/abc/720p/index.m3u8?_HLS_msn={last_msn}&_HLS_part={}",
        last_part + 1
    );
    let waiter = tokio::spawn(o.handle(get(&next)));
    let hint = tokio::spawn(o.handle(get(&format!(
        "/live/abc/720p/part{last_msn}.{}.m4s",
        last_part + 1
    ))));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiter.is_finished());
    assert!(!hint.is_finished());
    // Push from a plain thread, as GStreamer would.
    let pushed = std::thread::spawn(move || {
        for i in 40..60 {
            h.push("720p", video_sample(i, None)).unwrap();
        }
        h
    })
    .join()
    .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(2), waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text = body(r).await;
    assert!(text.contains(&format!("part{last_msn}.{}.m4s", last_part + 1)));
    let r = tokio::time::timeout(Duration::from_secs(2), hint)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(!body(r).await.is_empty());
    drop(pushed);
}

#[tokio::test]
async fn blocking_reload_times_out_with_503() {
    let o = fast_origin();
    let _h = started(&o, 40);
    let (m, p) = {
        let s = o.stream("abc").unwrap();
        let st = s.state.lock();
        st.track("720p").unwrap().last_part().unwrap()
    };
    let t = Instant::now();
    let r = o
        .handle(get(&format!(
            "/live/abc/720p/index.m3u8?_HLS_msn={}&_HLS_part={}",
            m + 1,
            p
        )))
        .await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    // 3 x target duration (1 s).
    assert!(t.elapsed() >= Duration::from_secs(3));
}

#[tokio::test]
async fn finish_unblocks_and_adds_endlist() {
    let o = fast_origin();
    let h = started(&o, 40);
    let (m, _) = {
        let s = o.stream("abc").unwrap();
        let st = s.state.lock();
        st.track("720p").unwrap().last_part().unwrap()
    };
    let waiter = tokio::spawn(o.handle(get(&format!(
        "/live/abc/720p/index.m3u8?_HLS_msn={}",
        m + 1
    ))));
    tokio::time::sleep(Duration::from_millis(30)).await;
    h.end();
    o.finish("abc");
    let r = tokio::time::timeout(Duration::from_secs(1), waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text = body(r).await;
    assert!(text.trim_end().ends_with("#EXT-X-ENDLIST"));
    assert!(!text.contains("PRELOAD-HINT"));
    o.remove("abc");
    let r = o.handle(get("/live/abc/720p/index.m3u8")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn serve_http1_and_h2c() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let o = fast_origin();
    let _h = started(&o, 40);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (gate, g) = ::server::gate();
    let server = tokio::spawn(o.clone().serve(
        listener,
        crate::server::acceptor(Vec::new(), |_| {}),
        g,
    ));
    // HTTP/1.1
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /live/abc/720p/index.m3u8 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("#EXT-X-TARGETDURATION:1"));
    // HTTP/2 with prior knowledge (h2c).
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .uri(format!("http://{addr}/live/abc/720p/init.mp4"))
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let r = sender.send_request(req).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.version(), http::Version::HTTP_2);
    drop(sender);
    gate.retire();
    tokio::time::timeout(Duration::from_secs(7), server)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_part_request_that_waited_is_measured_from_its_frames_arrival() {
    let o = fast_origin();
    let h = started(&o, 40);
    let (msn, part) = {
        let s = o.stream("abc").unwrap();
        let st = s.state.lock();
        st.track("720p").unwrap().last_part().unwrap()
    };
    // A part that exists already is not a wait: not measured.
    let r = o
        .handle(get(&format!("/live/abc/720p/part{msn}.{part}.m4s")))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    bytes(r).await;
    assert!(o.deliveries("abc").is_empty());
    // The next one, asked for before it exists, is: its frames arrived (as the ingest stamps
    // them) 30 ms before they were pushed.
    let next = tokio::spawn(o.handle(get(&format!("/live/abc/720p/part{msn}.{}.m4s", part + 1))));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!next.is_finished());
    let pushed = std::thread::spawn(move || {
        for i in 40..60 {
            let arrival = Instant::now() - Duration::from_millis(30);
            h.push("720p", video_sample(i, Some(arrival))).unwrap();
        }
        h
    })
    .join()
    .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(2), next)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Measured once the body is taken to be written, not before.
    assert!(o.deliveries("abc").is_empty());
    assert!(!bytes(r).await.is_empty());
    let d = o.deliveries("abc");
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].rendition, "720p");
    // The part's frames pushed with an arrival (frame 39 was pushed earlier, without one),
    // each at least the 30 ms it arrived early.
    assert!(d[0].frames >= 1, "{d:?}");
    assert!(d[0].p50_ms >= 30.0 && d[0].max_ms < 2000.0, "{d:?}");
    drop(pushed);
}

#[tokio::test]
async fn a_plain_playlist_request_is_answered_when_the_next_part_is_published() {
    let o = fast_origin();
    let h = started(&o, 40);
    let next = {
        let s = o.stream("abc").unwrap();
        let st = s.state.lock();
        st.track("720p").unwrap().next_part_position().unwrap()
    };
    // Nothing new: answered a part target (and FRESH_EDGE_SLACK at most) later, with what
    // there is.
    let t = Instant::now();
    let r = o.handle(get("/live/abc/720p/index.m3u8")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let waited = t.elapsed();
    assert!(waited >= Duration::from_millis(100), "{waited:?}");
    assert!(waited < Duration::from_secs(1), "{waited:?}");
    // The encoder goes on while the request waits: the answer lists the part that was
    // hinted when it was asked for.
    let pusher = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(30)).await;
        for i in 40..50 {
            h.push("720p", video_sample(i, None)).unwrap();
        }
        h
    });
    let text = body(o.handle(get("/live/abc/720p/index.m3u8")).await).await;
    let _h = pusher.await.unwrap();
    let uri = format!("URI=\"part{}.{}.m4s\"", next.0, next.1);
    assert!(
        text.lines()
            .any(|l| l.starts_with("#EXT-X-PART:") && l.contains(&uri)),
        "{uri} is not listed as a part:\n{text}"
    );
    // An ended rendition is answered at once.
    o.finish("abc");
    let t = Instant::now();
    let r = o.handle(get("/live/abc/720p/index.m3u8")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(t.elapsed() < Duration::from_millis(100));
}

#[tokio::test]
async fn a_segment_is_served_as_its_parts_back_to_back() {
    let o = fast_origin();
    // A keyframe every 60 frames: frame 60 closes segment 0.
    let _h = started(&o, 70);
    let (msn, parts) = {
        let s = o.stream("abc").unwrap();
        let st = s.state.lock();
        let t = st.track("720p").unwrap();
        let msn = t.last_complete_msn().unwrap();
        (msn, t.segment(msn).unwrap().len())
    };
    assert!(parts > 1, "a segment of {parts} part(s) proves nothing");
    let seg = bytes(o.handle(get(&format!("/live/abc/720p/seg{msn}.m4s"))).await).await;
    let mut joined = Vec::new();
    for i in 0..parts {
        let part = o
            .handle(get(&format!("/live/abc/720p/part{msn}.{i}.m4s")))
            .await;
        assert_eq!(part.status(), StatusCode::OK);
        joined.extend_from_slice(&bytes(part).await);
    }
    assert_eq!(seg.as_ref(), joined.as_slice());
    let head = o
        .handle(
            Request::builder()
                .method("HEAD")
                .uri(format!("/live/abc/720p/seg{msn}.m4s"))
                .body(())
                .unwrap(),
        )
        .await;
    assert_eq!(
        head.headers()[header::CONTENT_LENGTH].to_str().unwrap(),
        seg.len().to_string()
    );
}

/// Frame `i` of 30 fps video without reordering, a keyframe every second.
fn gop_1s_frame(i: u64) -> crate::Sample {
    let mut s = video_sample(i, None);
    s.keyframe = i.is_multiple_of(30);
    s.pts_ns = s.dts_ns;
    s
}

/// With `keyframe_join`, a player's first (plain) load of a video playlist is answered when
/// PART-HOLD-BACK behind its last part lies within a part target past a keyframe, and the
/// audio's, asked for at the same time, at the same moment. 100 ms parts (PART-HOLD-BACK 0.3 s),
/// a keyframe every second.
#[tokio::test]
async fn a_plain_video_playlist_request_waits_for_a_keyframe_join() {
    let o = Origin::new(PackagerConfig {
        keyframe_join: true,
        ..fast_origin().config().clone()
    });
    let h = o.publish("abc", vec![video_plan("720p"), audio_plan()]);
    h.configure("720p", h264_info().config).unwrap();
    h.configure("audio", aac_info().config).unwrap();
    let audio_until = |h: &StreamHandle, from: u64, frames: u64| {
        let to = frames * 48_000 / 1024 / 30;
        for j in from..to {
            h.push("audio", audio_sample(j)).unwrap();
        }
        to
    };
    // 50 frames: the edge is at 1.6 s, a start 0.3 s behind it 0.3 s past the keyframe at 1 s.
    for i in 0..50 {
        h.push("720p", gop_1s_frame(i)).unwrap();
    }
    let mut audio = audio_until(&h, 0, 50);
    let distance = || {
        let s = o.stream("abc").unwrap();
        let st = s.state.lock();
        st.track("720p").unwrap().join_distance()
    };
    assert!(
        distance().unwrap() > Duration::from_millis(100),
        "{:?}",
        distance()
    );
    let pusher = tokio::spawn(async move {
        for i in 50..90 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            h.push("720p", gop_1s_frame(i)).unwrap();
            audio = audio_until(&h, audio, i + 1);
        }
        h
    });
    let answered = |path: &'static str| {
        let o = o.clone();
        async move {
            let r = o.handle(get(path)).await;
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            (Instant::now(), body(r).await)
        }
    };
    let ((audio_at, audio_text), (video_at, text)) = tokio::join!(
        answered("/live/abc/audio/index.m3u8"),
        answered("/live/abc/720p/index.m3u8")
    );
    let _h = pusher.await.unwrap();
    // The audio waited for the video's join: its media reaches past the keyframe at 2 s (it
    // was at 1.6 s when asked for), and it went out with the video's.
    let audio_pl = crate::rules::check(&audio_text, &crate::rules::Expect::default())
        .unwrap_or_else(|e| panic!("{e:?}\n{audio_text}"));
    let audio_edge: f64 = audio_pl.segments.iter().map(|s| s.duration).sum();
    assert!(audio_edge > 2.1, "audio edge {audio_edge} s\n{audio_text}");
    let apart = audio_at.max(video_at) - audio_at.min(video_at);
    assert!(apart < Duration::from_millis(50), "{apart:?} apart");
    let pl = crate::rules::check(&text, &crate::rules::Expect::default())
        .unwrap_or_else(|e| panic!("{e:?}\n{text}"));
    // The start position (the listed media's end less 0.3 s) lies 0 to 100 ms past the
    // keyframe at 2 s (not the 0.3 s past the one at 1 s it was when the request came).
    let edge: f64 = pl.segments.iter().map(|s| s.duration).sum();
    let into = edge - 0.3 - 2.0;
    assert!(
        (-0.001..=0.101).contains(&into),
        "start {into} s past the keyframe\n{text}"
    );
}

/// A plain request for `path` is answered 200 within 100 ms.
async fn answered_at_once(o: &Origin, path: &str) {
    let t = Instant::now();
    let r = o.handle(get(path)).await;
    assert_eq!(r.status(), StatusCode::OK, "{path}");
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "{path}: {:?}",
        t.elapsed()
    );
}

/// Stream "abc"'s rendition `name` would start a player at a keyframe join now
/// ([`at_keyframe_join`]).
fn rendition_at_join(o: &Origin, name: &str) -> bool {
    let s = o.stream("abc").unwrap();
    let st = s.state.lock();
    at_keyframe_join(st.track(name).unwrap())
}

/// At a keyframe join already (the last part published put the start position just past a
/// keyframe), a plain video playlist request is answered at once: a player that loads several
/// playlists one after the other (Shaka) must not wait a GOP for each.
#[tokio::test]
async fn a_plain_video_playlist_request_at_a_keyframe_join_is_answered_at_once() {
    let o = Origin::new(PackagerConfig {
        keyframe_join: true,
        ..fast_origin().config().clone()
    });
    let h = o.publish("abc", vec![video_plan("720p")]);
    h.configure("720p", h264_info().config).unwrap();
    let at_join = || rendition_at_join(&o, "720p");
    // Frames until the newest part puts the start position within a part past the keyframe
    // at 1 s (a keyframe every second).
    let mut i = 0;
    while i < 40 || !at_join() {
        h.push("720p", gop_1s_frame(i)).unwrap();
        i += 1;
        assert!(i < 120, "no keyframe join in 4 s of media");
    }
    // Not the next part's wait (a part target and FRESH_EDGE_SLACK: 150 ms).
    answered_at_once(&o, "/live/abc/720p/index.m3u8").await;
}

/// A plain audio playlist request waits for the first of the stream's video renditions to
/// reach a keyframe join, not for one in particular: a transcoded rung reaches its join a
/// transcode after the source, and a player of that rung must not have its audio held a GOP
/// for the source's next one.
#[tokio::test]
async fn a_plain_audio_playlist_request_is_answered_at_any_video_renditions_join() {
    let o = Origin::new(PackagerConfig {
        keyframe_join: true,
        ..fast_origin().config().clone()
    });
    let h = o.publish(
        "abc",
        vec![video_plan("720p"), video_plan("360p"), audio_plan()],
    );
    for v in ["720p", "360p"] {
        h.configure(v, h264_info().config).unwrap();
    }
    h.configure("audio", aac_info().config).unwrap();
    let at_join = |name: &str| rendition_at_join(&o, name);
    // The 360p rung up to a keyframe join past the keyframe at 1 s; the 720p source ahead of
    // it, past its own join (a keyframe every second).
    let mut i = 0;
    while i < 40 || !at_join("360p") {
        h.push("360p", gop_1s_frame(i)).unwrap();
        i += 1;
        assert!(i < 120, "no keyframe join in 4 s of media");
    }
    let mut j = 0;
    while j < i + 1 || at_join("720p") {
        h.push("720p", gop_1s_frame(j)).unwrap();
        j += 1;
        assert!(j < 120, "720p never left its join");
    }
    for k in 0..i * 48_000 / 1024 / 30 {
        h.push("audio", audio_sample(k)).unwrap();
    }
    assert!(at_join("360p") && !at_join("720p"));
    // Not the 720p's next join (a second away) nor the next part's wait (150 ms).
    answered_at_once(&o, "/live/abc/audio/index.m3u8").await;
}

/// At the video's keyframe join, a plain audio playlist request also waits until the audio has
/// published the media the video has (its parts end where the video's do, a little later): a
/// playlist a part short made hls.js reload it at once and start its audio late.
#[tokio::test]
async fn a_plain_audio_playlist_request_waits_for_the_audio_to_have_the_videos_newest_part() {
    // 200 ms parts (the default), where whole AAC frames can follow the video's parts.
    let o = Origin::new(PackagerConfig {
        keyframe_join: true,
        part_target: Duration::from_millis(200),
        ..fast_origin().config().clone()
    });
    let h = o.publish("abc", vec![video_plan("720p"), audio_plan()]);
    h.configure("720p", h264_info().config).unwrap();
    h.configure("audio", aac_info().config).unwrap();
    let mut i = 0;
    while i < 40 || !rendition_at_join(&o, "720p") {
        h.push("720p", gop_1s_frame(i)).unwrap();
        i += 1;
        assert!(i < 120, "no keyframe join in 4 s of media");
    }
    let last_parts = || {
        let s = o.stream("abc").unwrap();
        let st = s.state.lock();
        let last = |n: &str| st.track(n).unwrap().listed_end_ns().unwrap();
        (last("audio"), last("720p"))
    };
    // The audio 300 ms behind the video's edge: a few parts short.
    let edge_ns = i * 1_000_000_000 / 30;
    let mut k = 0;
    while k * 1024 * 1_000_000_000 / 48_000 + 300_000_000 < edge_ns {
        h.push("audio", audio_sample(k)).unwrap();
        k += 1;
    }
    let (audio, video) = last_parts();
    assert!(
        audio + JOIN_AUDIO_SLACK_NS < video,
        "audio {audio}, video {video}"
    );
    let request = tokio::spawn({
        let o = o.clone();
        async move {
            let t = Instant::now();
            let r = o.handle(get("/live/abc/audio/index.m3u8")).await;
            (r.status(), t.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert!(!request.is_finished(), "answered a part short of the video");
    // The audio catches up (and the video goes one frame on, still at its join): answered.
    h.push("720p", gop_1s_frame(i)).unwrap();
    while k * 1024 * 1_000_000_000 / 48_000 < edge_ns + 40_000_000 {
        h.push("audio", audio_sample(k)).unwrap();
        k += 1;
    }
    let (audio, video) = last_parts();
    assert!(
        audio + JOIN_AUDIO_SLACK_NS >= video,
        "audio {audio}, video {video}"
    );
    let (status, waited) = request.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(waited < Duration::from_millis(300), "{waited:?}");
}

/// The audio and video of a stream, the audio `behind_ns` short of the video's newest part
/// (its samples pushed up to that far before the video's edge); returns the origin, the handle,
/// the video's frame count and the audio's sample count.
fn audio_behind_the_video(behind_ns: u64) -> (Origin, StreamHandle, u64, u64) {
    let o = Origin::new(PackagerConfig {
        keyframe_join: false,
        part_target: Duration::from_millis(200),
        ..fast_origin().config().clone()
    });
    let h = o.publish("abc", vec![video_plan("720p"), audio_plan()]);
    h.configure("720p", h264_info().config).unwrap();
    h.configure("audio", aac_info().config).unwrap();
    let frames = 80;
    for i in 0..frames {
        h.push("720p", gop_1s_frame(i)).unwrap();
    }
    let edge_ns = frames * 1_000_000_000 / 30;
    let mut k = 0;
    while k * 1024 * 1_000_000_000 / 48_000 + behind_ns < edge_ns {
        h.push("audio", audio_sample(k)).unwrap();
        k += 1;
    }
    let s = o.stream("abc").unwrap();
    let st = s.state.lock();
    let end = |n: &str| st.track(n).unwrap().listed_end_ns().unwrap();
    assert!(
        end("audio") + JOIN_AUDIO_SLACK_NS < end("720p"),
        "audio {}, video {}",
        end("audio"),
        end("720p")
    );
    drop(st);
    (o, h, frames, k)
}

/// A blocking audio playlist request whose part is already listed is not answered while the
/// audio lists less than the video (Shaka reloads both together and asks each for the part
/// after the last it knows: answered a part short, its audio stayed a part behind its video);
/// it is answered once the audio has caught up.
#[tokio::test]
async fn an_audio_playlist_waits_for_the_audio_to_list_what_the_video_lists() {
    let (o, h, frames, mut k) = audio_behind_the_video(300_000_000);
    let request = tokio::spawn({
        let o = o.clone();
        async move {
            let t = Instant::now();
            let r = o
                .handle(get("/live/abc/audio/index.m3u8?_HLS_msn=0&_HLS_part=0"))
                .await;
            let status = r.status();
            (status, body(r).await, t.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!request.is_finished(), "answered a part short of the video");
    let edge_ns = frames * 1_000_000_000 / 30;
    while k * 1024 * 1_000_000_000 / 48_000 < edge_ns + 40_000_000 {
        h.push("audio", audio_sample(k)).unwrap();
        k += 1;
    }
    let (status, text, waited) = request.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(waited < AUDIO_CATCH_UP_WAIT, "{waited:?}");
    let s = o.stream("abc").unwrap();
    let st = s.state.lock();
    let (msn, part) = st.track("720p").unwrap().last_part().unwrap();
    assert!(
        text.contains(&format!("URI=\"part{msn}.{part}.m4s\"")),
        "the audio playlist lists the video's newest part {msn}.{part}:\n{text}"
    );
}

/// Audio that does not catch up is answered AUDIO_CATCH_UP_WAIT after the request could be,
/// with what it has.
#[tokio::test]
async fn an_audio_playlist_that_stays_behind_is_answered_after_the_catch_up_wait() {
    let (o, _h, _, _) = audio_behind_the_video(300_000_000);
    let t = Instant::now();
    let r = o
        .handle(get("/live/abc/audio/index.m3u8?_HLS_msn=0&_HLS_part=0"))
        .await;
    let waited = t.elapsed();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        waited >= AUDIO_CATCH_UP_WAIT && waited < AUDIO_CATCH_UP_WAIT * 3,
        "{waited:?}"
    );
}
