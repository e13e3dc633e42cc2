//! Unit tests of `ctl` (kept beside it; compiled only for tests).

use super::*;

#[test]
fn responses_parse_by_length_or_to_the_end() {
    let raw =
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}trailing";
    assert_eq!(parse_response(raw), Some((200, b"{}".to_vec())));
    let raw = b"HTTP/1.1 404 Not Found\r\n\r\nno node n9\n";
    assert_eq!(parse_response(raw), Some((404, b"no node n9\n".to_vec())));
    assert_eq!(
        parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n{}"),
        None
    );
    assert_eq!(parse_response(b"garbage"), None);
}

#[test]
fn urls_need_http_host_and_port() {
    let a = Api::new("http://127.0.0.1:8081", "t".into()).unwrap();
    assert_eq!((a.host.as_str(), a.port), ("127.0.0.1", 8081));
    let a = Api::new("http://[::1]:9/api", "t".into()).unwrap();
    assert_eq!((a.host.as_str(), a.port), ("::1", 9));
    assert!(Api::new("https://x:1", "t".into()).is_err());
    assert!(Api::new("http://x", "t".into()).is_err());
    assert!(Api::new("http://x:port", "t".into()).is_err());
}

#[test]
fn actions_take_effect_in_these_states() {
    assert!(took_effect("cordon", "cordoned") && took_effect("cordon", "draining"));
    assert!(!took_effect("cordon", "ready"));
    assert!(took_effect("uncordon", "ready") && took_effect("uncordon", "full"));
    assert!(!took_effect("uncordon", "cordoned") && !took_effect("uncordon", "lost"));
    assert!(took_effect("drain", "draining") && !took_effect("drain", "cordoned"));
}

#[test]
fn tables_align_and_fill_gaps() {
    let t = table(
        &["A", "LONGER"],
        vec![vec!["xyz".into(), "1".into()], vec!["q".into(), "-".into()]],
    );
    assert_eq!(t, "A    LONGER\nxyz  1\nq    -\n");
    let nodes = serde_json::json!([{"id": "n1", "status": "cordoned", "streams": 2,
        "used_milli_units": 2500, "capacity_milli_units": 20000, "free_milli_units": 17500,
        "connected": true, "report_age_ms": 120}]);
    let t = nodes_table(&nodes, Target::Balancer);
    assert!(t.contains("n1    cordoned  2        2.50/20.00"), "{t}");
    assert!(t.contains("report 120 ms ago"), "{t}");
}

#[test]
fn a_stream_prints_nested_figures_and_lists_one_per_line() {
    let v = serde_json::json!({
        "playback_id": "abc",
        "renditions": ["source", "360p"],
        "issues": ["keyframe interval is 6.0 s; set it to 2 s"],
        "stats": {"fps": 30.0, "rungs": [{"name": "360p", "speed": 1.0}]}
    });
    assert_eq!(
        fields(&v),
        "issues:\n  - keyframe interval is 6.0 s; set it to 2 s\n\
         playback_id:  abc\n\
         renditions:   source,360p\n\
         stats:\n  fps:    30.0\n  rungs:\n    - name=360p speed=1.0\n"
    );
}
