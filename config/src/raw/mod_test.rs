//! Unit tests of what node and balancer files share (kept beside `raw/mod.rs`).

use super::*;
use crate::resolved::{Ranking, X264Preset};

#[derive(Debug, Deserialize)]
#[serde(bound = "T: Named")]
struct One<T> {
    v: Choice<T>,
}

fn parse<T: Named>(name: &str) -> Choice<T> {
    toml::from_str::<One<T>>(&format!("v = \"{name}\""))
        .expect("any string parses")
        .v
}

#[test]
fn a_known_name_parses_to_its_value() {
    let mut p = Problems::default();
    let v = parse::<Ranking>("power-of-two").resolve("x", Ranking::LeastLoaded, &mut p);
    assert_eq!(v, Ranking::PowerOfTwo);
    let v = parse::<X264Preset>("medium").resolve("y", X264Preset::Veryfast, &mut p);
    assert_eq!(v, X264Preset::Medium);
    assert!(p.0.is_empty(), "{:?}", p.0);
}

#[test]
fn an_unknown_name_is_a_problem_listing_every_name() {
    let mut p = Problems::default();
    let v = parse::<Ranking>("random").resolve("balancer.policy", Ranking::LeastLoaded, &mut p);
    assert_eq!(v, Ranking::LeastLoaded);
    let v = parse::<X264Preset>("placebo").resolve("t.p", X264Preset::Fast, &mut p);
    assert_eq!(v, X264Preset::Fast);
    let got: Vec<String> = p.0.iter().map(|x| x.to_string()).collect();
    assert_eq!(
        got,
        [
            "balancer.policy: must be least-loaded or power-of-two",
            "t.p: must be one of ultrafast, superfast, veryfast, faster, fast, medium",
        ]
    );
}

#[test]
fn names_round_trip() {
    for (name, v) in Ranking::ALL {
        assert_eq!(v.name(), *name);
        assert_eq!(Ranking::from_name(name), Some(*v));
    }
    for (name, v) in X264Preset::ALL {
        assert_eq!(v.to_string(), *name);
        assert_eq!(X264Preset::from_name(name), Some(*v));
    }
    assert_eq!(Ranking::from_name("Least-Loaded"), None);
}

#[test]
fn ids() {
    assert!(valid_id("node-1_a"));
    assert!(!valid_id(""));
    assert!(!valid_id("a b"));
    assert!(!valid_id(&"x".repeat(MAX_ID_LEN + 1)));
    assert!(valid_id(&"x".repeat(MAX_ID_LEN)));
}

#[test]
fn admin_token_needs_exactly_one_source_and_a_length() {
    let admin = |token: Option<&str>, file: Option<&str>| RawAdmin {
        token: token.map(str::to_owned),
        token_file: file.map(PathBuf::from),
    };
    let problems = |a: RawAdmin| {
        let mut p = Problems::default();
        let t = a.resolve(&mut p);
        (t, p.0.iter().map(|x| x.to_string()).collect::<Vec<_>>())
    };
    let (t, p) = problems(admin(Some("0123456789abcdef"), None));
    assert_eq!((t.as_str(), p.len()), ("0123456789abcdef", 0));
    let (_, p) = problems(admin(Some("short"), None));
    assert_eq!(p, ["admin.token: too short: at least 16 characters"]);
    let (_, p) = problems(admin(None, None));
    assert_eq!(
        p,
        ["admin.token: missing: the admin API needs a token (or token_file)"]
    );
    let (_, p) = problems(admin(Some("0123456789abcdef"), Some("/x")));
    assert_eq!(p, ["admin: set either token or token_file, not both"]);
    let (_, p) = problems(admin(None, Some("/nonexistent/edge-token")));
    assert!(
        p.len() == 1 && p[0].starts_with("admin.token_file: cannot read /nonexistent/edge-token"),
        "{p:?}"
    );
}
