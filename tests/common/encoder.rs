//! [`Encoder`]: a real publisher (ffmpeg, GStreamer or srt-live-transmit) sending test patterns,
//! killed on drop.

use super::{free_udp_port, kill_and_reap, send_signal, tail_file, wait_child, TempDir};
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// Default publishing time limit: longer than any single test needs, short enough that an
/// encoder leaked by a killed test binary stops by itself.
pub const DEFAULT_ENCODE_DURATION: Duration = Duration::from_secs(120);

/// How long srt-live-transmit may take to bind its UDP input (ffmpeg starts sending to it
/// only then).
const RELAY_START_TIMEOUT: Duration = Duration::from_secs(10);

/// Wait until process `pid` has a UDP socket bound to `port`, read from `/proc/PID/net/udp`
/// (the table of the process's own network namespace, so this works inside a test
/// namespace too).
fn wait_udp_bound(pid: u32, port: u16) {
    let needle = format!(":{port:04X}");
    super::wait_for(
        format_args!("process {pid} to bind UDP port {port}"),
        RELAY_START_TIMEOUT,
        || {
            let table = std::fs::read_to_string(format!("/proc/{pid}/net/udp")).ok()?;
            table
                .lines()
                .skip(1)
                .any(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .is_some_and(|a| a.ends_with(&needle))
                })
                .then_some(())
        },
    );
}

/// Lines of an encoder's log printed when a test fails while it is alive.
const LOG_TAIL_LINES: usize = 20;

/// What to encode. Defaults: 854x480 at 30 fps, a keyframe every 60 frames (2 s), 120 s,
/// real time, with audio.
#[derive(Debug, Clone)]
pub struct EncOpts {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    /// Keyframe interval in frames (fixed GOP, no scene-cut keyframes).
    pub gop: u32,
    /// Stop publishing after this long (media time).
    pub duration: Duration,
    /// Pace output at real time (`-re` / live sources). Keep it on for SRT: live-mode SRT drops
    /// what arrives faster than real time.
    pub realtime: bool,
    /// Send an AAC stereo 48 kHz sine alongside the video.
    pub audio: bool,
    /// Video bitrate (kbit/s).
    pub video_kbps: u32,
    /// Publish this pre-encoded file in a loop with `-c copy` instead of encoding a test
    /// pattern: almost no CPU, for tests with many publishers (see [`clip`]).
    pub source_file: Option<PathBuf>,
    /// Run the encoder's processes inside this network namespace (`ip netns exec NS ...`);
    /// see `netns::TestNet`.
    pub netns: Option<String>,
    /// More output options for ffmpeg's encoding (filters such as `-vf setpts=...`); not with
    /// `source_file`.
    pub extra: Vec<String>,
}

impl Default for EncOpts {
    fn default() -> Self {
        EncOpts {
            width: 854,
            height: 480,
            fps: 30,
            gop: 60,
            duration: DEFAULT_ENCODE_DURATION,
            realtime: true,
            audio: true,
            video_kbps: 1500,
            source_file: None,
            netns: None,
            extra: Vec::new(),
        }
    }
}

impl EncOpts {
    /// A 5 s publish of the default test pattern: for publishers that should be refused.
    pub fn short() -> EncOpts {
        EncOpts {
            duration: Duration::from_secs(5),
            ..EncOpts::default()
        }
    }

    fn secs(&self) -> String {
        format!("{:.3}", self.duration.as_secs_f64())
    }

    /// ffmpeg's arguments up to the output format and address (inputs, codecs, `extra`).
    pub fn ffmpeg_args(&self) -> Vec<String> {
        let mut a: Vec<String> = ["-hide_banner", "-nostdin", "-loglevel", "warning"]
            .map(String::from)
            .to_vec();
        let re = |a: &mut Vec<String>| {
            if self.realtime {
                a.push("-re".into());
            }
        };
        if let Some(f) = &self.source_file {
            re(&mut a);
            a.extend(["-stream_loop", "-1", "-i"].map(String::from));
            a.push(f.display().to_string());
            a.extend(["-t".into(), self.secs(), "-c".into(), "copy".into()]);
            return a;
        }
        re(&mut a);
        a.extend(["-f".into(), "lavfi".into(), "-i".into()]);
        a.push(format!(
            "testsrc2=size={}x{}:rate={}",
            self.width, self.height, self.fps
        ));
        if self.audio {
            re(&mut a);
            a.extend(
                ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"].map(String::from),
            );
        }
        a.extend(["-t".into(), self.secs(), "-map".into(), "0:v".into()]);
        if self.audio {
            a.extend(["-map", "1:a"].map(String::from));
        }
        let gop = self.gop.to_string();
        a.extend(
            [
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-tune",
                "zerolatency",
                "-g",
                &gop,
                "-keyint_min",
                &gop,
                "-sc_threshold",
                "0",
                "-pix_fmt",
                "yuv420p",
            ]
            .map(String::from),
        );
        a.extend(["-b:v".into(), format!("{}k", self.video_kbps)]);
        if self.audio {
            a.extend(["-c:a", "aac", "-ar", "48000", "-ac", "2", "-b:a", "128k"].map(String::from));
        }
        a.extend(self.extra.iter().cloned());
        a
    }
}

/// A spawned publisher (one process, or a pipeline of two for srt-live-transmit).
pub struct Encoder {
    name: String,
    /// The process that talks to the node; its exit status is the encoder's.
    child: Child,
    /// A feeding process (ffmpeg in front of srt-live-transmit).
    feeder: Option<Child>,
    log_paths: Vec<PathBuf>,
    _dir: TempDir,
}

impl Encoder {
    /// ffmpeg → FLV over RTMP to `url`.
    pub fn ffmpeg_rtmp(url: &str, o: EncOpts) -> Encoder {
        let mut args = o.ffmpeg_args();
        args.extend(["-f", "flv", "-flvflags", "no_duration_filesize"].map(String::from));
        args.push(url.into());
        Encoder::spawn_one("ffmpeg-rtmp", "ffmpeg", &args, o.netns.as_deref())
    }

    /// ffmpeg with a command line of the caller's own (`args`, output included), logged as
    /// `name`: for publishers [`EncOpts`] does not describe (the glass benchmark's time strip).
    pub fn ffmpeg_with(name: &str, args: &[String]) -> Encoder {
        Encoder::spawn_one(name, "ffmpeg", args, None)
    }

    /// ffmpeg → MPEG-TS over SRT (caller) to `url`.
    pub fn ffmpeg_srt(url: &str, o: EncOpts) -> Encoder {
        let mut args = o.ffmpeg_args();
        args.extend(["-f", "mpegts"].map(String::from));
        args.push(url.into());
        Encoder::spawn_one("ffmpeg-srt", "ffmpeg", &args, o.netns.as_deref())
    }

    /// gst-launch-1.0: videotestsrc → x264enc, audiotestsrc → voaacenc, flvmux → rtmp2sink.
    pub fn gst_rtmp2sink(url: &str, o: EncOpts) -> Encoder {
        let live = o.realtime.to_string();
        let vbufs = (o.duration.as_secs_f64() * o.fps as f64).ceil() as u64;
        // audiotestsrc's default buffers hold 1024 samples.
        let abufs = (o.duration.as_secs_f64() * 48000.0 / 1024.0).ceil() as u64;
        let mut p = format!(
            "videotestsrc is-live={live} pattern=smpte num-buffers={vbufs} \
             ! video/x-raw,width={w},height={h},framerate={fps}/1 ! videoconvert \
             ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={gop} bitrate={kbps} \
             ! video/x-h264,profile=main ! h264parse ! queue ! mux. ",
            w = o.width,
            h = o.height,
            fps = o.fps,
            gop = o.gop,
            kbps = o.video_kbps
        );
        if o.audio {
            p.push_str(&format!(
                "audiotestsrc is-live={live} wave=sine num-buffers={abufs} ! audio/x-raw,rate=48000,channels=2 \
                 ! audioconvert ! audioresample ! voaacenc bitrate=128000 ! aacparse ! queue ! mux. "
            ));
        }
        // RTMPS against a test certificate no public CA signed: GIO checks nothing.
        let tls = if url.starts_with("rtmps://") {
            " tls-validation-flags=0"
        } else {
            ""
        };
        p.push_str(&format!(
            "flvmux name=mux streamable=true ! rtmp2sink location=\"{url}\" sync={live}{tls}"
        ));
        let mut args = vec!["-q".to_string(), "-e".to_string()];
        args.extend(shell_words(&p));
        Encoder::spawn_one("gst-rtmp2sink", "gst-launch-1.0", &args, o.netns.as_deref())
    }

    /// ffmpeg → MPEG-TS over local UDP → `srt-live-transmit udp://:PORT URL` (SRT caller).
    pub fn srt_live_transmit(url: &str, o: EncOpts) -> Encoder {
        let dir = TempDir::new("enc-slt");
        let port = free_udp_port();
        let relay_log = dir.path().join("srt-live-transmit.log");
        let child = spawn_logged(
            "srt-live-transmit",
            &[format!("udp://:{port}"), url.to_string()],
            &relay_log,
            o.netns.as_deref(),
        );
        wait_udp_bound(child.id(), port);
        let mut args = o.ffmpeg_args();
        args.extend([
            "-f".into(),
            "mpegts".into(),
            format!("udp://127.0.0.1:{port}?pkt_size=1316"),
        ]);
        let feed_log = dir.path().join("ffmpeg.log");
        let feeder = spawn_logged("ffmpeg", &args, &feed_log, o.netns.as_deref());
        let enc = Encoder {
            name: "srt-live-transmit".into(),
            child,
            feeder: Some(feeder),
            log_paths: vec![relay_log, feed_log],
            _dir: dir,
        };
        eprintln!(
            "[harness] encoder {} pid {} logs {:?}",
            enc.name,
            enc.pid(),
            enc.log_paths
        );
        enc
    }

    fn spawn_one(name: &str, program: &str, args: &[String], netns: Option<&str>) -> Encoder {
        let dir = TempDir::new("enc");
        let log = dir.path().join(format!("{name}.log"));
        let child = spawn_logged(program, args, &log, netns);
        eprintln!(
            "[harness] encoder {name} pid {} log {}",
            child.id(),
            log.display()
        );
        Encoder {
            name: name.into(),
            child,
            feeder: None,
            log_paths: vec![log],
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while every process of the encoder is alive.
    pub fn is_running(&mut self) -> bool {
        let main = matches!(self.child.try_wait(), Ok(None));
        let feeder = self
            .feeder
            .as_mut()
            .is_none_or(|f| matches!(f.try_wait(), Ok(None)));
        main && feeder
    }

    /// The exit status of the process that talks to the node, once it has exited.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits up to `timeout` for the encoder to exit by itself (e.g. its duration elapsed).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_child(&mut self.child, timeout)
    }

    /// For a publisher the server should refuse: waits up to `within` for it to give up, and
    /// panics (with its log) if it does not exit or exits successfully. Start it with
    /// [`EncOpts::short`], so that one wrongly accepted still ends.
    pub fn expect_refused(mut self, within: Duration) -> Encoder {
        match self.wait_exit(within) {
            Some(s) if !s.success() => self,
            other => panic!(
                "the encoder was not refused ({other:?}):\n{}",
                self.log_text()
            ),
        }
    }

    /// SIGINT (ffmpeg and gst-launch -e finish the stream cleanly), then wait up to `timeout`;
    /// killed if still running. For srt-live-transmit the feeder is stopped first.
    pub fn stop(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(f) = self.feeder.as_mut() {
            let _ = send_signal(f.id(), "INT");
            if wait_child(f, timeout).is_none() {
                kill_and_reap(f);
            }
        }
        if self.exit_status().is_none() {
            let _ = send_signal(self.pid(), "INT");
        }
        match wait_child(&mut self.child, timeout) {
            Some(st) => Some(st),
            None => {
                kill_and_reap(&mut self.child);
                None
            }
        }
    }

    /// SIGKILL everything (an abrupt publisher disconnect).
    pub fn kill(&mut self) {
        if let Some(f) = self.feeder.as_mut() {
            kill_and_reap(f);
        }
        kill_and_reap(&mut self.child);
    }

    /// The encoder's log(s), concatenated.
    pub fn log_text(&self) -> String {
        self.log_paths
            .iter()
            .map(|p| {
                format!(
                    "== {} ==\n{}",
                    p.display(),
                    std::fs::read_to_string(p).unwrap_or_default()
                )
            })
            .collect()
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            for p in &self.log_paths {
                eprintln!(
                    "[harness] encoder {} log {}:\n{}",
                    self.name,
                    p.display(),
                    tail_file(p, LOG_TAIL_LINES)
                );
            }
        }
    }
}

/// Spawns `program ARGS` (inside network namespace `netns` with `ip netns exec`, which execs
/// the program in place: the child's PID is the encoder's) logging to `log`.
fn spawn_logged(
    program: &str,
    args: &[String],
    log: &std::path::Path,
    netns: Option<&str>,
) -> Child {
    let f = File::create(log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
    let f2 = f.try_clone().expect("clone encoder log handle");
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, program]);
            c
        }
        None => Command::new(program),
    };
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(f)
        .stderr(f2)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program} (is it installed? scripts/setup.sh): {e}"))
}

/// Splits a gst-launch description into argv words, honouring double quotes.
fn shell_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut in_word = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// A 200 s 320x180 15 fps H.264 (2 s GOP) + AAC clip, made once per test process, for
/// [`EncOpts::source_file`]. Longer than any test, so the loop (whose timestamp seam makes a
/// short part) never comes round; for
/// [`EncOpts::source_file`].
pub fn clip() -> PathBuf {
    static CLIP: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    CLIP.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("edge-test-clip-{}.flv", std::process::id()));
        let st = std::process::Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-loglevel",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=320x180:rate=15",
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:sample_rate=48000",
            ])
            .args([
                "-t",
                "200",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-g",
                "30",
                "-keyint_min",
                "30",
                "-sc_threshold",
                "0",
                "-pix_fmt",
                "yuv420p",
                "-b:v",
                "300k",
                "-c:a",
                "aac",
                "-b:a",
                "64k",
            ])
            .arg(&path)
            .status()
            .expect("run ffmpeg to make the test clip");
        assert!(st.success(), "ffmpeg could not make the test clip");
        path
    })
    .clone()
}

/// A current ffmpeg (7.x, static: x265, libaom, Enhanced RTMP), from the imageio-ffmpeg wheel
/// `scripts/setup.sh` installs into `.venv`; Debian 12's ffmpeg 5.1 cannot send HEVC or AV1
/// over RTMP.
pub fn modern_ffmpeg() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/lib");
    let found = std::fs::read_dir(&venv).ok().and_then(|pythons| {
        pythons.flatten().find_map(|py| {
            let bin = py.path().join("site-packages/imageio_ffmpeg/binaries");
            std::fs::read_dir(bin)
                .ok()?
                .flatten()
                .map(|e| e.path())
                .find(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("ffmpeg-linux"))
                })
        })
    });
    found.unwrap_or_else(|| {
        panic!(
            "no ffmpeg from imageio-ffmpeg under {}: run scripts/setup.sh",
            venv.display()
        )
    })
}
