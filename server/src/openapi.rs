//! Checks of an admin API's OpenAPI document, run by the node's and the balancer's tests:
//! the document lists exactly the routes the API has, every operation answers problem details
//! for its errors, and every object schema says which properties are `required` and allows no
//! others (`additionalProperties: false`), so a response that grows a field the document does
//! not know fails schema checks (the end-to-end tests run schemathesis against live servers).

use std::collections::BTreeSet;

use serde_json::Value;

/// HTTP methods an OpenAPI path item may hold.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The methods `routes` (method, path template) allow on `path`: a `{name}` segment of a
/// template matches any one non-empty segment.
pub fn methods_for<'a>(routes: &[(&'a str, &str)], path: &str) -> Vec<&'a str> {
    let segs: Vec<&str> = path.split('/').collect();
    let mut v: Vec<&'a str> = routes
        .iter()
        .filter(|(_, t)| {
            let ts: Vec<&str> = t.split('/').collect();
            ts.len() == segs.len()
                && ts.iter().zip(&segs).all(|(t, s)| {
                    if t.starts_with('{') && t.ends_with('}') {
                        !s.is_empty()
                    } else {
                        t == s
                    }
                })
        })
        .map(|(m, _)| *m)
        .collect();
    v.dedup();
    v
}

/// The answer to a request no route of `routes` takes: 405 with `Allow` when the path exists
/// for other methods, else 404.
pub fn no_route(routes: &[(&str, &str)], path: &str) -> crate::http::Reply {
    use http::{header, HeaderValue, StatusCode};
    let allowed = methods_for(routes, path);
    if allowed.is_empty() {
        return crate::http::problem(StatusCode::NOT_FOUND, "unknown API path");
    }
    let list = allowed.join(", ");
    let mut r = crate::http::problem(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{path} takes {list}"),
    );
    if let Ok(v) = HeaderValue::from_str(&list) {
        r.headers_mut().insert(header::ALLOW, v);
    }
    r
}

/// The one path segment after `prefix` in `path` (`/api/v1/nodes/n1` → `n1`), or the two
/// (`/api/v1/nodes/n1/drain` → `n1`, `drain`) with [`segments2`].
pub fn segment<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    path.strip_prefix(prefix)
        .filter(|s| !s.is_empty() && !s.contains('/'))
}

/// See [`segment`].
pub fn segments2<'a>(path: &'a str, prefix: &str) -> Option<(&'a str, &'a str)> {
    let (a, b) = path.strip_prefix(prefix)?.split_once('/')?;
    (!a.is_empty() && !b.is_empty() && !b.contains('/')).then_some((a, b))
}

/// What is wrong with `doc` (an OpenAPI 3.1 document as JSON) given the API's `routes`
/// (method, path template); empty when nothing is.
pub fn problems(doc: &str, routes: &[(&str, &str)]) -> Vec<String> {
    let mut errs = Vec::new();
    let v: Value = match serde_json::from_str(doc) {
        Ok(v) => v,
        Err(e) => return vec![format!("not JSON: {e}")],
    };
    if !v["openapi"].as_str().is_some_and(|s| s.starts_with("3.1")) {
        errs.push(format!("openapi is {}, not 3.1.x", v["openapi"]));
    }
    let mut listed = BTreeSet::new();
    for (path, item) in v["paths"].as_object().into_iter().flatten() {
        for m in METHODS {
            let Some(op) = item.get(m) else { continue };
            listed.insert((m.to_uppercase(), path.clone()));
            for (status, resp) in op["responses"].as_object().into_iter().flatten() {
                let error = status.starts_with('4') || status.starts_with('5');
                let content = &resp["content"];
                if error && content.get("application/problem+json").is_none() {
                    errs.push(format!("{m} {path}: {status} is not problem details"));
                }
            }
        }
    }
    let routes: BTreeSet<(String, String)> = routes
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    for missing in routes.difference(&listed) {
        errs.push(format!(
            "route {} {} is not in the document",
            missing.0, missing.1
        ));
    }
    for extra in listed.difference(&routes) {
        errs.push(format!(
            "the document lists {} {}, which the API lacks",
            extra.0, extra.1
        ));
    }
    strict_schemas(&v, "#", &mut errs);
    errs
}

/// Every object schema under `v` has `required` and `additionalProperties: false`.
fn strict_schemas(v: &Value, at: &str, errs: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            if o.get("type").and_then(Value::as_str) == Some("object")
                && o.contains_key("properties")
            {
                if !o.contains_key("required") {
                    errs.push(format!("{at}: an object schema without `required`"));
                }
                if o.get("additionalProperties") != Some(&Value::Bool(false)) {
                    errs.push(format!(
                        "{at}: an object schema without additionalProperties: false"
                    ));
                }
            }
            for (k, child) in o {
                strict_schemas(child, &format!("{at}/{k}"), errs);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                strict_schemas(child, &format!("{at}/{i}"), errs);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_templates_and_other_methods_get_405_with_allow() {
        let routes = [
            ("GET", "/api/v1/nodes"),
            ("DELETE", "/api/v1/nodes/{id}"),
            ("POST", "/api/v1/nodes/{id}/drain"),
        ];
        assert_eq!(methods_for(&routes, "/api/v1/nodes/n1"), ["DELETE"]);
        assert_eq!(methods_for(&routes, "/api/v1/nodes/n1/drain"), ["POST"]);
        assert!(methods_for(&routes, "/api/v1/nodes/").is_empty());
        assert!(methods_for(&routes, "/api/v1/nodes/n1/x").is_empty());
        let r = no_route(&routes, "/api/v1/nodes/n1");
        assert_eq!(r.status(), 405);
        assert_eq!(r.headers()["allow"], "DELETE");
        assert_eq!(no_route(&routes, "/api/v2").status(), 404);
        assert_eq!(segment("/api/v1/nodes/n1", "/api/v1/nodes/"), Some("n1"));
        assert_eq!(segment("/api/v1/nodes/n1/drain", "/api/v1/nodes/"), None);
        assert_eq!(
            segments2("/api/v1/nodes/n1/drain", "/api/v1/nodes/"),
            Some(("n1", "drain"))
        );
        assert_eq!(segments2("/api/v1/nodes//drain", "/api/v1/nodes/"), None);
    }

    #[test]
    fn a_document_and_its_routes_are_compared_both_ways() {
        let doc = r#"{"openapi":"3.1.0","paths":{
            "/a":{"get":{"responses":{"200":{"content":{"application/json":{"schema":
                {"type":"object","required":[],"additionalProperties":false,"properties":{}}}}},
                "401":{"content":{"application/problem+json":{}}}}}},
            "/b":{"post":{"responses":{"404":{"content":{"text/plain":{}}}}}}},
            "components":{"schemas":{"Loose":{"type":"object","properties":{"x":{}}}}}}"#;
        let errs = problems(doc, &[("GET", "/a"), ("DELETE", "/c")]);
        assert!(errs
            .iter()
            .any(|e| e.contains("post /b: 404 is not problem details")));
        assert!(errs
            .iter()
            .any(|e| e.contains("route DELETE /c is not in the document")));
        assert!(errs
            .iter()
            .any(|e| e.contains("lists POST /b, which the API lacks")));
        assert!(errs
            .iter()
            .any(|e| e.contains("Loose: an object schema without `required`")));
        assert!(errs
            .iter()
            .any(|e| e.contains("Loose: an object schema without additionalProperties")));
        assert_eq!(errs.len(), 5, "{errs:?}");
    }
}
