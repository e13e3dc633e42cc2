//! End to end: publisher authentication beyond the config's keys: the HTTP webhook (2xx
//! accepts, anything else refuses; the hook may name the playback ID) and SRT passphrases.
// End-to-end tests and benchmarks drive real processes (encoders, players, `edge`) on real
// time; the ban on the std clock (clippy.toml) is for product code.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::{
    io::{BufRead, BufReader},
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use common::http::{hook_server, HookRequest};
use common::*;

/// A webhook on loopback: accepts key `hook-accepts-this-key` (naming playback ID `hooked`)
/// when the request is signed, answers 503 for `hook-is-down-for-this-key`, refuses everything
/// else with 403; records the bodies it was sent.
fn webhook() -> (u16, Arc<Mutex<Vec<HookRequest>>>) {
    hook_server(|req, _| {
        let sig = req.header("x-edge-signature");
        let signed = sig.len() == 67
            && sig.starts_with("v1=")
            && sig[3..].bytes().all(|b| b.is_ascii_hexdigit());
        if req.body.contains("\"hook-is-down-for-this-key\"") {
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                .to_vec()
        } else if signed && req.body.contains("\"hook-accepts-this-key\"") {
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 24\r\nConnection: close\r\n\r\n{\"playback_id\":\"hooked\"}".to_vec()
        } else {
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
        }
    })
}

#[test]
fn webhook_accepts_and_refuses_publishers() {
    let (port, seen) = webhook();
    let node = Node::start(|c| {
        *c = c.replace("[hls]", &format!("[auth]\nwebhook = \"http://127.0.0.1:{port}/publish\"\nwebhook_timeout = \"2s\"\nsecret = \"a-32-character-secret-for-tests!\"\n\n[hls]"))
    });
    // A key only the hook knows: accepted, under the playback ID the hook named.
    let mut enc = Encoder::ffmpeg_rtmp(&node.rtmp_url("hook-accepts-this-key"), EncOpts::default());
    node.wait_media_playlist("hooked", "source", 1, FIRST_SEGMENT_TIMEOUT);
    assert!(enc.is_running());
    // A key the hook refuses: the publisher is refused.
    let _bad = Encoder::ffmpeg_rtmp(&node.rtmp_url("hook-refuses-this-key"), EncOpts::short())
        .expect_refused(Duration::from_secs(20));
    // Config keys never reach the hook.
    let mut cfg_key = Encoder::ffmpeg_rtmp(&node.rtmp_url("test-stream-key-1"), EncOpts::default());
    node.wait_media_playlist("one", "source", 1, FIRST_SEGMENT_TIMEOUT);
    assert!(cfg_key.is_running());
    // The hook answering 5xx is not a wrong key: the encoder, the log and the metrics say the
    // auth backend is unavailable.
    let down = Encoder::ffmpeg_rtmp(
        &node.rtmp_url("hook-is-down-for-this-key"),
        EncOpts::short(),
    )
    .expect_refused(Duration::from_secs(20));
    assert!(
        down.log_text().contains("unavailable"),
        "the encoder is told the auth service is unavailable:\n{}",
        down.log_text()
    );
    let m = node.metrics();
    assert_eq!(
        metric_value(
            &m,
            r#"edge_ingest_connections_total{protocol="rtmp",result="auth_unavailable"}"#
        ),
        1.0
    );
    assert_eq!(
        metric_value(
            &m,
            r#"edge_ingest_connections_total{protocol="rtmp",result="refused_key"}"#
        ),
        1.0
    );
    let bodies: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.body.clone())
        .collect();
    assert_eq!(bodies.len(), 3, "{bodies:?}");
    assert!(
        bodies
            .iter()
            .all(|b| b.contains("\"client_addr\"") && b.contains("\"protocol\":\"rtmp\"")),
        "{bodies:?}"
    );
    assert!(
        !node.log_text().contains("hook-accepts-this-key"),
        "a key leaked into the log"
    );
}

#[test]
fn srt_passphrase_is_required_when_configured() {
    let node = Node::start(|c| {
        *c = c.replace(
            "playback_id = \"two\"",
            "playback_id = \"two\"\nsrt_passphrase = \"correct-horse-battery\"",
        );
    });
    // Without the passphrase: refused.
    let _none = Encoder::ffmpeg_srt(&node.srt_url("test-stream-key-2"), EncOpts::short())
        .expect_refused(Duration::from_secs(30));
    assert!(node.stream("two").is_none());
    // With it: accepted and decodable.
    let url = format!(
        "{}&passphrase=correct-horse-battery&pbkeylen=16",
        node.srt_url("test-stream-key-2")
    );
    let mut ok = Encoder::ffmpeg_srt(&url, EncOpts::default());
    let pl = node.wait_media_playlist("two", "source", 1, FIRST_SEGMENT_TIMEOUT);
    assert!(!pl.segments.is_empty());
    assert!(ok.is_running(), "{}", ok.log_text());
    // A caller that encrypts for a stream without a passphrase is refused cleanly (srt-tokio
    // would otherwise hit unimplemented!()), and the node lives on.
    let url = format!(
        "{}&passphrase=correct-horse-battery",
        node.srt_url("test-stream-key-1")
    );
    let _enc_one =
        Encoder::ffmpeg_srt(&url, EncOpts::short()).expect_refused(Duration::from_secs(30));
    assert!(ok.is_running());
}

/// The same webhook over HTTPS, in Python's `http.server` and `ssl` (a TLS stack we did not
/// write), with a certificate for `localhost` from a private CA made with the `openssl` CLI.
/// Returns the CA file, the port and the server process.
struct HttpsHook {
    dir: TempDir,
    port: u16,
    child: std::process::Child,
}

impl Drop for HttpsHook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const HTTPS_HOOK: &str = r#"
import http.server, json, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0"))).decode()
        sig = self.headers.get("x-edge-signature", "")
        if sig.startswith("v1=") and len(sig) == 67 and "hook-accepts-this-key" in body:
            out = b'{"playback_id":"hooked"}'
            self.send_response(200)
        else:
            out = b""
            self.send_response(403)
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    def log_message(self, *a):
        pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;

fn https_hook() -> HttpsHook {
    let dir = TempDir::new("https-hook");
    let d = dir.path();
    let openssl = |args: &[&str]| {
        let o = std::process::Command::new("openssl")
            .args(args)
            .current_dir(d)
            .output()
            .expect("run openssl");
        assert!(
            o.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=edge test webhook CA",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "hook.key",
                "-out",
                "hook.csr",
                "-subj",
                "/CN=localhost",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        d.join("ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "hook.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "hook.pem",
        "-days",
        "2",
        "-extfile",
        "ext",
    ]);
    let mut child = std::process::Command::new("python3")
        .args(["-c", HTTPS_HOOK, "hook.pem", "hook.key"])
        .current_dir(d)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the hook prints its port");
    let port = line.trim().parse().expect("port");
    HttpsHook { dir, port, child }
}

#[test]
fn webhook_over_https_checks_the_hooks_certificate() {
    let hook = https_hook();
    let auth = |ca: Option<&Path>| {
        let ca = ca
            .map(|p| format!("webhook_ca = \"{}\"\n", p.display()))
            .unwrap_or_default();
        format!(
            "[auth]\nwebhook = \"https://localhost:{}/publish\"\n{ca}webhook_timeout = \"2s\"\nsecret = \"a-32-character-secret-for-tests!\"\n\n[hls]",
            hook.port
        )
    };
    // With the hook's CA: the key it accepts publishes, one it refuses is a wrong key.
    let ca = hook.dir.path().join("ca.pem");
    let node = Node::start(|c| *c = c.replace("[hls]", &auth(Some(&ca))));
    let enc = Encoder::ffmpeg_rtmp(&node.rtmp_url("hook-accepts-this-key"), EncOpts::default());
    node.wait_media_playlist("hooked", "source", 1, FIRST_SEGMENT_TIMEOUT);
    let _bad = Encoder::ffmpeg_rtmp(&node.rtmp_url("hook-refuses-this-key"), EncOpts::short())
        .expect_refused(Duration::from_secs(20));
    let series =
        |r: &str| format!("edge_ingest_connections_total{{protocol=\"rtmp\",result=\"{r}\"}}");
    let m = node.metrics();
    assert_eq!(metric_value(&m, &series("refused_key")), 1.0);
    assert_eq!(metric_value(&m, &series("auth_unavailable")), 0.0);
    drop(enc);
    drop(node);

    // Without it the certificate does not verify against the public roots: the hook cannot
    // be trusted, so the publish is refused as "auth unavailable", never let in.
    let node = Node::start(|c| *c = c.replace("[hls]", &auth(None)));
    let untrusted = Encoder::ffmpeg_rtmp(&node.rtmp_url("hook-accepts-this-key"), EncOpts::short())
        .expect_refused(Duration::from_secs(20));
    assert!(
        untrusted.log_text().contains("unavailable"),
        "{}",
        untrusted.log_text()
    );
    assert_eq!(
        metric_value(&node.metrics(), &series("auth_unavailable")),
        1.0
    );
    assert!(node.stream("hooked").is_none());
}
