//! Unit tests of `dashboard` (kept beside it; compiled only for tests).

use super::*;

const TOKEN: &str = "s3cret-admin-token";

fn req(method: Method, path: &str, headers: &[(&str, &str)]) -> Request<()> {
    let mut b = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap()
}

fn body(r: &Reply) -> String {
    use http_body_util::BodyExt;
    let b = futures::executor::block_on(r.body().clone().collect())
        .unwrap()
        .to_bytes();
    String::from_utf8_lossy(&b).into_owned()
}

/// Log in with the token: (cookie header value, CSRF token).
fn login(s: &Sessions, now: Instant) -> (String, String) {
    let auth = format!("Bearer {TOKEN}");
    let r = route(
        &req(
            Method::POST,
            "/dashboard/session",
            &[("authorization", &auth)],
        ),
        TOKEN,
        s,
        now,
    )
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let cookie = r.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_string();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
    let csrf: serde_json::Value = serde_json::from_str(&body(&r)).unwrap();
    let pair = cookie.split(';').next().unwrap().to_string();
    (pair, csrf["csrf"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn the_page_and_its_assets_are_embedded_with_a_strict_policy() {
    let s = Sessions::new();
    let now = Instant::now();
    for (path, ty) in [
        ("/", "text/html"),
        ("/dashboard", "text/html"),
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/app.css", "text/css"),
        ("/dashboard/hls.min.js", "text/javascript"),
    ] {
        let r = route(&req(Method::GET, path, &[]), TOKEN, &s, now).unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let h = r.headers();
        assert!(h[header::CONTENT_TYPE].to_str().unwrap().starts_with(ty));
        let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    }
    // The page itself holds no data and no secret, and loads nothing from elsewhere.
    let page = body(&route(&req(Method::GET, "/", &[]), TOKEN, &s, now).unwrap());
    assert!(!page.contains(TOKEN) && !page.contains("http://") && !page.contains("https://"));
    assert!(route(&req(Method::GET, "/api/v1/nodes", &[]), TOKEN, &s, now).is_none());
    let r = route(&req(Method::GET, "/dashboard/nope", &[]), TOKEN, &s, now).unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_session_is_made_only_from_the_token_and_lets_the_page_use_the_api() {
    let s = Sessions::new();
    let now = Instant::now();
    // A wrong or missing token makes no session.
    for h in [vec![], vec![("authorization", "Bearer nope")]] {
        let r = route(&req(Method::POST, "/dashboard/session", &h), TOKEN, &s, now).unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(r.headers().get(header::SET_COOKIE).is_none());
    }
    assert!(s.is_empty());
    let (cookie, csrf) = login(&s, now);
    assert_eq!(csrf.len(), 64);
    // Reads with the cookie alone; the page gets its CSRF token back after a reload.
    let get = req(Method::GET, "/api/v1/nodes", &[("cookie", &cookie)]);
    assert!(authorize(&get, TOKEN, &s, now).is_ok());
    let again = route(
        &req(Method::GET, "/dashboard/session", &[("cookie", &cookie)]),
        TOKEN,
        &s,
        now,
    )
    .unwrap();
    assert!(body(&again).contains(&csrf));
    // Actions need the CSRF token too: a form on another site can send the cookie, not the
    // header.
    let post = req(
        Method::POST,
        "/api/v1/nodes/n1/drain",
        &[("cookie", &cookie)],
    );
    let denied = authorize(&post, TOKEN, &s, now).unwrap_err();
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);
    let wrong = req(
        Method::POST,
        "/api/v1/nodes/n1/drain",
        &[("cookie", &cookie), (CSRF_HEADER, "0000")],
    );
    assert_eq!(
        authorize(&wrong, TOKEN, &s, now).unwrap_err().status(),
        StatusCode::FORBIDDEN
    );
    let ok = req(
        Method::POST,
        "/api/v1/nodes/n1/drain",
        &[
            ("cookie", &format!("other=1; {cookie}")),
            (CSRF_HEADER, &csrf),
        ],
    );
    assert!(authorize(&ok, TOKEN, &s, now).is_ok());
    // The bearer token still works without any session; nothing works without either.
    let auth = format!("Bearer {TOKEN}");
    let bearer = req(
        Method::POST,
        "/api/v1/nodes/n1/drain",
        &[("authorization", &auth)],
    );
    assert!(authorize(&bearer, TOKEN, &s, now).is_ok());
    let none = req(
        Method::GET,
        "/api/v1/nodes",
        &[("cookie", "edge_session=forged")],
    );
    assert_eq!(
        authorize(&none, TOKEN, &s, now).unwrap_err().status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn sessions_end_on_logout_expiry_and_a_new_token() {
    let s = Sessions::new();
    let now = Instant::now();
    let get = |cookie: &str| req(Method::GET, "/api/v1/streams", &[("cookie", cookie)]);
    // Logout (with the CSRF token) ends it and clears the cookie.
    let (cookie, csrf) = login(&s, now);
    let out = route(
        &req(
            Method::DELETE,
            "/dashboard/session",
            &[("cookie", &cookie), (CSRF_HEADER, &csrf)],
        ),
        TOKEN,
        &s,
        now,
    )
    .unwrap();
    assert_eq!(out.status(), StatusCode::OK);
    assert!(out.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    assert!(authorize(&get(&cookie), TOKEN, &s, now).is_err());
    // Expiry.
    let (cookie, _) = login(&s, now);
    assert!(authorize(
        &get(&cookie),
        TOKEN,
        &s,
        now + SESSION_TTL - Duration::from_secs(1)
    )
    .is_ok());
    assert!(authorize(&get(&cookie), TOKEN, &s, now + SESSION_TTL).is_err());
    // A rotated admin token ends sessions made with the old one.
    let (cookie, _) = login(&s, now);
    assert!(authorize(&get(&cookie), "a-new-token", &s, now).is_err());
    assert!(
        authorize(&get(&cookie), TOKEN, &s, now).is_err(),
        "gone for good"
    );
}

#[tokio::test]
async fn logins_past_the_cap_end_the_oldest_sessions() {
    let s = Sessions::new();
    let t0 = Instant::now();
    let (first, _) = login(&s, t0);
    for i in 1..=MAX_SESSIONS as u64 {
        login(&s, t0 + Duration::from_millis(i));
    }
    assert_eq!(s.len(), MAX_SESSIONS);
    let get = req(Method::GET, "/api/v1/streams", &[("cookie", &first)]);
    assert!(authorize(&get, TOKEN, &s, t0).is_err());
}
