//! A viewer's request target (`/live/...?query`) goes through the packager's router and its
//! LL-HLS query rules (`packager::request`, reached through `packager::fuzzing`) before
//! anything else. They must never panic, and each resource must have exactly one URL: a
//! routed path rebuilt from its parts is the same string, and an accepted query rebuilt from
//! its values parses to the same directives.
#![no_main]
use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use packager::fuzzing::{parse_query, playlist_readiness, route, RouteParts};

fn rebuild(r: &RouteParts<'_>) -> String {
    let base = match r.rendition {
        None => return format!("/live/{}/index.m3u8", r.pid),
        Some(rendition) => format!("/live/{}/{}", r.pid, rendition),
    };
    match (r.kind, r.number, r.part) {
        ("playlist", None, None) => format!("{base}/index.m3u8"),
        ("init", Some(0), None) => format!("{base}/init.mp4"),
        ("init", Some(n), None) => format!("{base}/init{n}.mp4"),
        ("segment", Some(n), None) => format!("{base}/seg{n}.m4s"),
        ("part", Some(n), Some(p)) => format!("{base}/part{n}.{p}.m4s"),
        other => panic!("route with impossible parts {other:?}"),
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(last_part) = u.arbitrary::<Option<(u64, u32)>>() else {
        return;
    };
    let (Ok(last_complete), Ok(next_msn), Ok(ended)) = (
        u.arbitrary::<Option<u64>>(),
        u.arbitrary::<u64>(),
        u.arbitrary::<bool>(),
    ) else {
        return;
    };
    let Ok(target) = std::str::from_utf8(u.take_rest()) else {
        return;
    };
    // As hyper splits a request target.
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    if let Some(r) = route(path) {
        assert!(valid_name(r.pid));
        assert!(r.rendition.is_none_or(valid_name));
        assert_eq!(rebuild(&r), path);
    }
    match parse_query(query) {
        Ok((msn, part, skip)) => {
            assert!(part.is_none() || msn.is_some());
            let mut again = Vec::new();
            if let Some(m) = msn {
                again.push(format!("_HLS_msn={m}"));
            }
            if let Some(p) = part {
                again.push(format!("_HLS_part={p}"));
            }
            if skip {
                again.push("_HLS_skip=YES".to_string());
            }
            let again = again.join("&");
            assert_eq!(parse_query(Some(&again)), Ok((msn, part, skip)));
            let ready = playlist_readiness(query, last_part, last_complete, next_msn, ended);
            assert!(matches!(ready, Ok("ready" | "wait" | "bad_request")));
            if ended {
                assert_ne!(ready, Ok("wait"));
            }
        }
        Err(reason) => {
            assert!(!reason.is_empty());
            assert!(playlist_readiness(query, last_part, last_complete, next_msn, ended).is_err());
        }
    }
});
