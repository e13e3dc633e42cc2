//! The public API as other crates use it: publish, configure, push, end, finish, remove,
//! streams (JSON), and `handle` with different request body types.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use packager::{
    CodecConfig, Origin, PackagerConfig, PackagerError, RenditionKind, RenditionPlan, Sample,
    StreamHandle,
};

/// avcC of a 1280x720 High profile stream (one SPS, one PPS).
const AVCC: &[u8] = &[
    0x01, 0x64, 0x00, 0x1f, 0xff, 0xe1, 0x00, 0x1c, 0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x80, 0x50,
    0x05, 0xbb, 0x01, 0x6a, 0x02, 0x02, 0x02, 0x80, 0x00, 0x00, 0x03, 0x00, 0x80, 0x00, 0x00, 0x1e,
    0x07, 0x8c, 0x18, 0xcd, 0x01, 0x00, 0x05, 0x68, 0xe9, 0x7b, 0x2c, 0x8b,
];

fn feed(h: &StreamHandle, frames: u64) -> Result<(), PackagerError> {
    for i in 0..frames {
        let ns = i * 1_000_000_000 / 30;
        h.push(
            "720p",
            Sample {
                pts_ns: ns,
                dts_ns: ns,
                keyframe: i % 60 == 0,
                data: Bytes::from_static(&[0, 0, 0, 2, 0x65, 0x88]),
                arrival: Some(tokio::time::Instant::now()),
            },
        )?;
    }
    Ok(())
}

#[tokio::test]
async fn public_api_round_trip() {
    let origin = Origin::new(PackagerConfig {
        ready_timeout: Duration::from_millis(200),
        keyframe_join: false,
        ..PackagerConfig::default()
    });
    let plan = vec![RenditionPlan {
        name: "720p".into(),
        kind: RenditionKind::Video,
        bandwidth: 2_500_000,
    }];
    let handle = origin.publish("pid1", plan.clone());
    handle
        .configure(
            "720p",
            CodecConfig::H264 {
                avcc: Bytes::from_static(AVCC),
                width: 1280,
                height: 720,
                framerate: Some((30, 1)),
            },
        )
        .unwrap();
    // GStreamer streaming threads are plain threads.
    let handle = std::thread::spawn(move || {
        feed(&handle, 90).unwrap();
        handle
    })
    .join()
    .unwrap();
    handle.end();

    let json = serde_json::to_value(origin.streams()).unwrap();
    assert_eq!(json[0]["playback_id"], "pid1");
    assert_eq!(json[0]["renditions"][0]["kind"], "video");
    assert_eq!(json[0]["renditions"][0]["msn"], 1);
    assert_eq!(json[0]["ended"], false);

    let req = http::Request::builder()
        .uri("/live/pid1/index.m3u8")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = origin.handle(req).await;
    assert_eq!(resp.status(), 200);
    let text = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&text).contains("720p/index.m3u8"));

    // Reconnect within the window continues the playlist.
    let handle = origin.publish("pid1", plan);
    assert!(matches!(
        handle.push(
            "720p",
            Sample {
                pts_ns: 0,
                dts_ns: 0,
                keyframe: true,
                data: Bytes::new(),
                arrival: None
            }
        ),
        Ok(())
    ));
    drop(handle);
    origin.finish("pid1");
    let req = http::Request::builder()
        .uri("/live/pid1/720p/index.m3u8")
        .body(())
        .unwrap();
    let body = origin
        .handle(req)
        .await
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    let body = String::from_utf8_lossy(&body).into_owned();
    assert!(body.contains("#EXT-X-DISCONTINUITY"));
    assert!(body.trim_end().ends_with("#EXT-X-ENDLIST"));

    origin.remove("pid1");
    assert!(origin.streams().is_empty());
    let req = http::Request::builder()
        .uri("/live/pid1/index.m3u8")
        .body(())
        .unwrap();
    assert_eq!(origin.handle(req).await.status(), 404);
}
