//! Unit tests of `direct`: the way each publish goes, and that a stream packaged without
//! GStreamer reaches the packager exactly as it does through GStreamer (the same plan,
//! codec configurations and samples, from the same ffmpeg-made FLV).

use std::sync::Mutex;

use edge_config::Rung;

use super::*;

/// Everything an [`Output`] is told.
#[derive(Default)]
struct Recorder {
    plans: Mutex<Vec<Plan>>,
    configs: Mutex<Vec<(String, CodecConfig)>>,
    samples: Mutex<Vec<(String, Sample)>>,
    codecs: Mutex<Vec<String>>,
    source_frames: Mutex<usize>,
}

impl Output for Recorder {
    fn plan(&self, plan: Plan) {
        self.plans.lock().unwrap().push(plan);
    }
    fn configure(&self, rendition: &str, codec: CodecConfig) {
        self.configs
            .lock()
            .unwrap()
            .push((rendition.to_string(), codec));
    }
    fn sample(&self, rendition: &str, sample: Sample) {
        self.samples
            .lock()
            .unwrap()
            .push((rendition.to_string(), sample));
    }
    fn source_frame(&self, _: u64, _: u64, _: bool, _: usize) -> Option<String> {
        *self.source_frames.lock().unwrap() += 1;
        None
    }
    fn source_codec(&self, codec: String) {
        self.codecs.lock().unwrap().push(codec);
    }
    fn source_audio_codec(&self, codec: String) {
        self.codecs.lock().unwrap().push(codec);
    }
}

fn spec(ladder: Vec<Rung>) -> PipelineSpec {
    PipelineSpec {
        ladder,
        ..fuzzing::spec("test")
    }
}

/// A deciding RTMP input with no ladder, telling a recorder nothing anyone reads.
fn input_without_ladder() -> Input {
    Input::rtmp(
        spec(vec![]),
        Arc::new(Recorder::default()),
        Arc::default(),
        true,
    )
    .expect("an input")
}

fn rung(height: u32) -> Rung {
    Rung {
        name: format!("{height}p"),
        width: height * 16 / 9,
        height,
        fps: 30,
        video_kbps: 800,
        milli_units: 500,
    }
}

/// The audio and video tags of an FLV file ffmpeg makes with `args` (inputs and codecs),
/// as (kind, timestamp, body), through `crate::flv`'s reading as `rtmp` does.
fn flv_messages(args: &str) -> Vec<(TagType, u32, Bytes)> {
    let dir = std::env::temp_dir().join(format!("edge-direct-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!("{n}.flv"));
    let mut cmd = std::process::Command::new("ffmpeg");
    cmd.args(["-v", "error", "-y"]);
    cmd.args(args.split_whitespace());
    cmd.args(["-f", "flv"]).arg(&path);
    let st = cmd.status().expect("ffmpeg runs");
    assert!(st.success(), "ffmpeg {args}");
    let data = std::fs::read(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let mut out = Vec::new();
    let mut p = 13;
    while p + 11 <= data.len() {
        let kind = data[p];
        let n = u32::from_be_bytes([0, data[p + 1], data[p + 2], data[p + 3]]) as usize;
        let ts = u32::from_be_bytes([data[p + 7], data[p + 4], data[p + 5], data[p + 6]]);
        let body = Bytes::copy_from_slice(&data[p + 11..p + 11 + n]);
        let media = match kind {
            8 => Some((TagType::Audio, flv::audio(&body))),
            9 => Some((TagType::Video, flv::video(&body))),
            _ => None,
        };
        if let Some((k, flv::Media::Forward(b))) = media {
            out.push((k, ts, b));
        }
        p += 11 + n + 4;
    }
    out
}

const AV_360P: &str =
    "-f lavfi -i testsrc2=size=640x360:rate=30 -f lavfi -i sine=frequency=440:sample_rate=48000 \
     -t 3 -c:v libx264 -preset ultrafast -g 30 -bf 2 -c:a aac -ac 2";

/// Feed `messages` through an RTMP input and let any pipeline drain.
async fn run(
    spec: PipelineSpec,
    direct: bool,
    messages: &[(TagType, u32, Bytes)],
) -> (Arc<Recorder>, bool) {
    let rec = Arc::new(Recorder::default());
    let out: Arc<dyn Output> = rec.clone();
    let mut input = Input::rtmp(spec, out, Arc::default(), direct).expect("input");
    for (kind, ts, body) in messages {
        input
            .push(*kind, *ts, body.clone(), Instant::now())
            .expect("pushed");
    }
    let was_direct = input.is_direct();
    input.end_of_input();
    tokio::time::timeout(std::time::Duration::from_secs(30), input.drained())
        .await
        .expect("drained in time")
        .expect("drained");
    tokio::task::spawn_blocking(move || input.stop())
        .await
        .unwrap();
    (rec, was_direct)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_stream_reaches_the_packager_as_it_does_through_gstreamer() {
    let messages = flv_messages(AV_360P);
    let (direct, was_direct) = run(spec(vec![rung(360), rung(720)]), true, &messages).await;
    assert!(
        was_direct,
        "640x360 with rungs no smaller than it goes direct"
    );
    let (gst, was_direct) = run(spec(vec![rung(360), rung(720)]), false, &messages).await;
    assert!(!was_direct);

    let (dp, gp) = (direct.plans.lock().unwrap(), gst.plans.lock().unwrap());
    assert_eq!(dp.len(), 1);
    assert_eq!(gp.len(), 1);
    assert_eq!(dp[0].source, gp[0].source);
    assert_eq!(dp[0].video, gp[0].video);
    assert_eq!(dp[0].audio, gp[0].audio);
    assert!(dp[0].rungs.is_empty() && gp[0].rungs.is_empty());

    let (dc, gc) = (direct.configs.lock().unwrap(), gst.configs.lock().unwrap());
    assert_eq!(*dc, *gc, "codec configurations");
    assert_eq!(*direct.codecs.lock().unwrap(), *gst.codecs.lock().unwrap());

    let (ds, gs) = (direct.samples.lock().unwrap(), gst.samples.lock().unwrap());
    // Through GStreamer, running time 0 is the video's first PTS (ffmpeg's FLV starts the
    // video's DTS at 0, so its first PTS is the B-frames' delay, 67 ms): every time is that much
    // earlier, and a time before it (the first DTS, the first audio frames) is 0. Direct
    // keeps the encoder's own times: the same timeline, not cut.
    let shift = ds
        .iter()
        .find(|(r, _)| r == "source")
        .map(|(_, s)| s.pts_ns);
    assert_eq!(shift, Some(67_000_000), "two B-frames at 30 fps");
    let shift = 67_000_000;
    for rendition in ["source", "audio"] {
        let d: Vec<_> = ds.iter().filter(|(r, _)| r == rendition).collect();
        let g: Vec<_> = gs.iter().filter(|(r, _)| r == rendition).collect();
        assert!(d.len() > 50, "{rendition}: {} samples", d.len());
        assert_eq!(d.len(), g.len(), "{rendition}: as many samples");
        let gst_time = |ours: u64, theirs: u64| if theirs == 0 { ours } else { theirs + shift };
        for (i, ((_, a), (_, b))) in d.iter().zip(g.iter()).enumerate() {
            assert_eq!(
                (a.pts_ns, a.dts_ns, a.keyframe, a.data.len()),
                (
                    gst_time(a.pts_ns, b.pts_ns),
                    gst_time(a.dts_ns, b.dts_ns),
                    b.keyframe,
                    b.data.len()
                ),
                "{rendition} sample {i}: pts, dts, keyframe, size"
            );
            assert!(a.data == b.data, "{rendition} sample {i}: its bytes");
            assert!(a.arrival.is_some());
        }
    }
    // B-frames: some presentation times lie after their decode times.
    assert!(ds.iter().any(|(_, s)| s.pts_ns > s.dts_ns));
    assert_eq!(
        *direct.source_frames.lock().unwrap(),
        ds.iter().filter(|(r, _)| r == "source").count()
    );
}

#[tokio::test]
async fn a_stream_with_rungs_to_encode_or_audio_to_convert_goes_through_gstreamer() {
    let messages = flv_messages(AV_360P);
    let mut dec = match Input::rtmp(
        spec(vec![rung(240)]),
        Arc::new(Recorder::default()),
        Arc::default(),
        true,
    ) {
        Ok(Input::Deciding(d)) => d,
        _ => panic!("deciding"),
    };
    // Empty configurations say nothing yet; a 2-byte NAL length prefix is not ours to package.
    for (kind, body) in [
        (TagType::Video, &[0x17, 0, 0, 0, 0][..]),
        (TagType::Audio, &[0xaf, 0]),
    ] {
        assert!(dec
            .consider(kind, 0, &Bytes::copy_from_slice(body))
            .is_none());
    }
    let mut short_lengths = messages
        .iter()
        .find(|(k, _, b)| *k == TagType::Video && b[1] == PACKET_CONFIG)
        .map(|(_, _, b)| b.to_vec())
        .expect("a video configuration");
    short_lengths[5 + 4] = 0xfd; // lengthSizeMinusOne 1
    assert!(matches!(
        dec.consider(TagType::Video, 0, &Bytes::from(short_lengths)),
        Some(Route::Pipeline(why)) if why == "2-byte NAL lengths"
    ));
    let routes: Vec<_> = messages
        .iter()
        .take(4)
        .filter_map(|(k, ts, b)| dec.consider(*k, *ts, b))
        .collect();
    assert!(
        matches!(routes.first(), Some(Route::Pipeline(why)) if why == "rungs to encode"),
        "a 240p rung under a 360p source"
    );

    let mp3 = flv_messages(
        "-f lavfi -i testsrc2=size=320x240:rate=30 -f lavfi -i sine=sample_rate=44100 -t 1 \
         -c:v libx264 -preset ultrafast -c:a libmp3lame",
    );
    let (rec, was_direct) = run(spec(vec![]), true, &mp3).await;
    assert!(!was_direct, "MP3 is converted by GStreamer");
    assert!(rec
        .configs
        .lock()
        .unwrap()
        .iter()
        .any(|(r, _)| r == "audio"));

    // Off in the configuration: GStreamer from the start.
    let input = Input::rtmp(
        spec(vec![]),
        Arc::new(Recorder::default()),
        Arc::default(),
        false,
    )
    .unwrap();
    assert!(matches!(input, Input::Pipeline(_)));
    input.stop();
}

#[tokio::test]
async fn a_stream_without_audio_is_set_up_after_a_second_of_video() {
    let video = flv_messages(
        "-f lavfi -i testsrc2=size=320x240:rate=30 -t 3 -c:v libx264 -preset ultrafast -g 30",
    );
    let rec = Arc::new(Recorder::default());
    let mut input = Input::rtmp(spec(vec![]), rec.clone(), Arc::default(), true).unwrap();
    let mut decided_at = None;
    for (kind, ts, body) in &video {
        input
            .push(*kind, *ts, body.clone(), Instant::now())
            .unwrap();
        if decided_at.is_none() && input.is_direct() {
            decided_at = Some(*ts);
        }
    }
    assert_eq!(decided_at, Some(AUDIO_DECISION_WAIT_MS));
    // Nothing held was lost: every frame reached the packager.
    let frames = video
        .iter()
        .filter(|(_, _, b)| b[1] == PACKET_FRAME)
        .count();
    assert_eq!(rec.samples.lock().unwrap().len(), frames);
    assert_eq!(rec.plans.lock().unwrap()[0].source.fps, 30.0);
}

#[tokio::test]
async fn what_a_direct_stream_cannot_take_is_refused_with_the_reason() {
    let messages = flv_messages(AV_360P);
    // A source larger than the node takes.
    let mut small = spec(vec![]);
    small.max_source = SourceSize {
        width: 320,
        height: 240,
        fps: 30.0,
    };
    let mut input =
        Input::rtmp(small, Arc::new(Recorder::default()), Arc::default(), true).unwrap();
    let refused = messages
        .iter()
        .find_map(|(k, ts, b)| input.push(*k, *ts, b.clone(), Instant::now()).err());
    assert!(
        matches!(&refused, Some(PipelineError::SourceRefused(why)) if why.contains("640x360 is larger")),
        "{refused:?}"
    );

    let mut input = input_without_ladder();
    for (k, ts, b) in messages.iter().take(10) {
        input.push(*k, *ts, b.clone(), Instant::now()).unwrap();
    }
    assert!(input.is_direct());
    // MP3 after AAC, HEVC after H.264, an unreadable H.264 configuration.
    let mp3 = Bytes::from_static(&[0x2f, 0xff, 0xfb]);
    let e = input
        .push(TagType::Audio, 400, mp3, Instant::now())
        .unwrap_err();
    assert!(
        matches!(&e, PipelineError::SourceRefused(w) if w.contains("sound format 2")),
        "{e:?}"
    );
    let e = input
        .push_elementary(
            VideoCodec::Hevc,
            400,
            Elementary::Config(Bytes::from_static(&[1])),
        )
        .unwrap_err();
    assert!(
        matches!(&e, PipelineError::SourceRefused(w) if w.contains("codec changed")),
        "{e:?}"
    );
    let bad = Bytes::from_static(&[0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1f]);
    let e = input
        .push(TagType::Video, 400, bad, Instant::now())
        .unwrap_err();
    assert!(
        matches!(&e, PipelineError::SourceRefused(w) if w.contains("cannot read")),
        "{e:?}"
    );
    // Short and empty bodies are nothing, not errors.
    for b in [&[][..], &[0x17], &[0x27, 1], &[0xaf]] {
        input
            .push(
                TagType::Video,
                400,
                Bytes::copy_from_slice(b),
                Instant::now(),
            )
            .unwrap();
    }
    for b in [&[][..], &[0xaf], &[0xaf, 0], &[0xaf, 1]] {
        input
            .push(
                TagType::Audio,
                400,
                Bytes::copy_from_slice(b),
                Instant::now(),
            )
            .unwrap();
    }
    assert!(input.is_direct(), "still packaging");
}

#[test]
fn held_input_is_bounded() {
    let mut input = input_without_ladder();
    // Frames without a configuration, past the bound: the stream goes through GStreamer.
    let frame = Bytes::from(vec![0x27u8; 1 << 20]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    for i in 0..(MAX_HELD_BYTES >> 20) as u32 + 1 {
        input
            .push(TagType::Video, i * 33, frame.clone(), Instant::now())
            .unwrap();
    }
    assert!(matches!(input, Input::Pipeline(_)));
    input.stop();
}
