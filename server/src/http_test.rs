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
