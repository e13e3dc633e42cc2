use super::*;

fn req(auth: Option<&str>) -> Request<()> {
    let mut b = Request::builder().uri("/api/v1/x");
    if let Some(a) = auth {
        b = b.header(header::AUTHORIZATION, a);
    }
    b.body(()).expect("request")
}

#[test]
fn bearer_checks_token_exactly() {
    assert!(bearer_ok(&req(Some("Bearer s3cret")), "s3cret"));
    assert!(!bearer_ok(&req(Some("Bearer s3cre")), "s3cret"));
    assert!(!bearer_ok(&req(Some("Bearer s3crett")), "s3cret"));
    assert!(!bearer_ok(&req(Some("bearer s3cret")), "s3cret"));
    assert!(!bearer_ok(&req(Some("s3cret")), "s3cret"));
    assert!(!bearer_ok(&req(None), "s3cret"));
}

#[test]
fn empty_secret_matches_nothing() {
    assert!(!secret_eq(b"", b""));
    assert!(!bearer_ok(&req(Some("Bearer ")), ""));
}

#[test]
fn replies_have_content_types() {
    let r = text(StatusCode::NOT_FOUND, "x");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        r.headers()[header::CONTENT_TYPE],
        "text/plain; charset=utf-8"
    );
    let j = json(&serde_json::json!({"a": 1}));
    assert_eq!(j.headers()[header::CONTENT_TYPE], "application/json");
    let u = unauthorized();
    assert_eq!(u.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(u.headers()[header::WWW_AUTHENTICATE], "Bearer");
}

#[test]
fn kick_blocks_are_whole_seconds_within_the_maximum() {
    let req = |q: &str| Request::builder().uri(format!("/x{q}")).body(()).unwrap();
    let max = std::time::Duration::from_secs(60);
    assert_eq!(block_param(&req(""), max).unwrap().as_secs(), 0);
    assert_eq!(
        block_param(&req("?block_seconds=60"), max)
            .unwrap()
            .as_secs(),
        60
    );
    assert_eq!(
        block_param(&req("?a=1&block_seconds=5"), max)
            .unwrap()
            .as_secs(),
        5
    );
    for bad in [
        "?block_seconds=61",
        "?block_seconds=-1",
        "?block_seconds=1.5",
        "?block_seconds",
    ] {
        let r = block_param(&req(bad), max).unwrap_err();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    assert_eq!(query_param(&req("?x=1&y=2"), "y"), Some("2"));
    assert_eq!(query_param(&req("?xy=1"), "x"), None);
}
