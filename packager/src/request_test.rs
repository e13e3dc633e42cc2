//! Unit tests of `request` (kept beside it; compiled only for tests).

use super::*;

#[test]
fn routes() {
    assert_eq!(
        route("/live/abc/index.m3u8"),
        Some(Route::Multivariant { pid: "abc" })
    );
    assert_eq!(
        route("/live/abc/720p/index.m3u8"),
        Some(Route::Media {
            pid: "abc",
            rendition: "720p"
        })
    );
    assert_eq!(
        route("/live/abc/720p/init.mp4"),
        Some(Route::Init {
            pid: "abc",
            rendition: "720p",
            id: 0
        })
    );
    assert_eq!(
        route("/live/abc/720p/init3.mp4"),
        Some(Route::Init {
            pid: "abc",
            rendition: "720p",
            id: 3
        })
    );
    assert_eq!(
        route("/live/abc/audio/seg12.m4s"),
        Some(Route::Segment {
            pid: "abc",
            rendition: "audio",
            msn: 12
        })
    );
    assert_eq!(
        route("/live/abc/audio/part12.3.m4s"),
        Some(Route::Part {
            pid: "abc",
            rendition: "audio",
            msn: 12,
            part: 3
        })
    );
    for bad in [
        "/live/abc",
        "/live/abc/",
        "/live//index.m3u8",
        "/live/abc/720p/seg01.m4s",
        "/live/abc/720p/seg-1.m4s",
        "/live/abc/720p/seg+1.m4s",
        "/live/abc/720p/init0.mp4",
        "/live/abc/720p/part1.m4s",
        "/live/abc/720p/part1.2.3.m4s",
        "/live/abc/../index.m3u8",
        "/live/abc/720p/x/index.m3u8",
        "/other/abc/index.m3u8",
        "/live/abc/720p/seg99999999999999999999999.m4s",
    ] {
        assert_eq!(route(bad), None, "{bad}");
    }
}

#[test]
fn queries() {
    assert_eq!(parse_query(None), Ok(HlsQuery::default()));
    assert_eq!(
        parse_query(Some("_HLS_msn=5&_HLS_part=2&_HLS_skip=YES&x=1")),
        Ok(HlsQuery {
            msn: Some(5),
            part: Some(2),
            skip: true
        })
    );
    assert!(parse_query(Some("_HLS_skip=v2")).unwrap().skip);
    assert!(parse_query(Some("_HLS_part=2")).is_err());
    assert!(parse_query(Some("_HLS_msn=abc")).is_err());
    assert!(parse_query(Some("_HLS_msn=-1")).is_err());
    assert!(parse_query(Some("_HLS_msn=1&_HLS_msn=2")).is_err());
    assert!(parse_query(Some("_HLS_skip=NO")).is_err());
}

fn pos(last_part: Option<(u64, u32)>, last_complete: Option<u64>) -> Position {
    Position {
        last_part,
        last_complete,
        next_msn: 0,
        ended: false,
    }
}

#[test]
fn blocking_rules() {
    let p = pos(Some((10, 2)), Some(9));
    let q = |msn, part| HlsQuery {
        msn: Some(msn),
        part,
        skip: false,
    };
    assert_eq!(
        playlist_readiness(&HlsQuery::default(), &p),
        Readiness::Ready
    );
    assert_eq!(playlist_readiness(&q(10, Some(2)), &p), Readiness::Ready);
    assert_eq!(playlist_readiness(&q(10, Some(3)), &p), Readiness::Wait);
    assert_eq!(playlist_readiness(&q(9, None), &p), Readiness::Ready);
    assert_eq!(playlist_readiness(&q(10, None), &p), Readiness::Wait);
    assert_eq!(playlist_readiness(&q(12, Some(0)), &p), Readiness::Wait);
    assert!(matches!(
        playlist_readiness(&q(13, None), &p),
        Readiness::BadRequest(_)
    ));
    // A part index past the end of segment 9 is satisfied by 10's parts.
    assert_eq!(playlist_readiness(&q(9, Some(40)), &p), Readiness::Ready);
    // Nothing published yet: up to next_msn + 2 may wait.
    assert_eq!(
        playlist_readiness(&q(2, Some(0)), &pos(None, None)),
        Readiness::Wait
    );
    assert!(matches!(
        playlist_readiness(&q(3, None), &pos(None, None)),
        Readiness::BadRequest(_)
    ));
    // Ended: answer at once.
    let mut e = p;
    e.ended = true;
    assert_eq!(playlist_readiness(&q(11, None), &e), Readiness::Ready);
}

#[test]
fn part_rules() {
    assert_eq!(part_readiness((3, 1), true, Some((3, 2))), Readiness::Ready);
    assert_eq!(part_readiness((3, 2), false, Some((3, 2))), Readiness::Wait);
    assert_eq!(
        part_readiness((3, 3), false, Some((3, 2))),
        Readiness::NotFound
    );
    assert_eq!(part_readiness((4, 0), false, None), Readiness::NotFound);
}
