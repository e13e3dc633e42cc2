//! Scaling the decoded pictures for the ladder: a scaler of our own for 8-bit planar video,
//! as the GStreamer element `edgescale` ([`register`]), in place of GStreamer 1.22's
//! `videoscale`.
//!
//! Why: `videoscale` costs 2.3 ms to bring a 1280x720 I420 picture to 854x480 on the benchmark
//! machine, about as much as decoding it, and in the ladder benchmark it was a quarter of the
//! node's CPU (BENCHMARKS.md, ladder). Most of that is its general converter around the
//! filter, not the filter.
//!
//! The filter and its passes are the `scale` crate's (`scale::PlaneScaler`, the same filter
//! as `videoscale`'s default method, compiled optimised in every profile); this module is the
//! element around them: caps (any size and pixel aspect ratio on the other side, format, frame
//! rate and colorimetry kept), one plane scaler per plane made when the sizes are negotiated.
//!
//! Entry point: [`register`] (makes `edgescale` available to `gst::ElementFactory::make`).
//! It takes [`FORMATS`]; the pipeline uses `videoscale` for the others (10-bit video, for
//! instance).

use std::sync::OnceLock;

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer_video as gst_video;

/// The name the element is registered under.
pub const ELEMENT_NAME: &str = "edgescale";

/// Decoded formats the element scales: one 8-bit component per plane. Everything 8-bit that
/// GStreamer 1.22's H.264, H.265 and AV1 decoders put out (4:2:0, 4:2:2, 4:4:4, 4:0:0).
pub const FORMATS: [gst_video::VideoFormat; 5] = [
    gst_video::VideoFormat::I420,
    gst_video::VideoFormat::Yv12,
    gst_video::VideoFormat::Y42b,
    gst_video::VideoFormat::Y444,
    gst_video::VideoFormat::Gray8,
];

/// Make `edgescale` available to `gst::ElementFactory::make` in this process (after
/// `gst::init`). Registering twice is harmless; the first result is kept.
pub fn register() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            gst::Element::register(
                None,
                ELEMENT_NAME,
                gst::Rank::NONE,
                EdgeScale::static_type(),
            )
            .map_err(|e| format!("register {ELEMENT_NAME}: {e}"))
        })
        .clone()
}

/// Where a plane's samples sit in their cells, for `scale::Filter::with_phase`: a plane
/// subsampled by `2^sub` whose samples the caps' `chroma-site` puts with the first of their
/// luma samples (`mpeg2`, H.264's default, horizontally) sits at that luma sample's centre, a
/// `2^(sub+1)`-th of its own cell in; anything else at its cell's centre. Scaling such a plane
/// as if centred moved the ladder's chroma a quarter of a luma pixel at 1.5 times smaller.
fn phase(cosited: bool, sub: u32) -> f64 {
    if cosited && sub > 0 {
        ::scale::CENTRED / f64::from(1u32 << sub.min(16))
    } else {
        ::scale::CENTRED
    }
}

/// The input's chroma site as its caps say it. `VideoInfo` is not asked first: without a
/// colorimetry in the caps (what `avdec_h264` puts out when the stream does not signal one),
/// GStreamer 1.22 replaces the caps' site by its default for the picture's height (`mpeg2`
/// above 576 lines, none below), which would scale a smaller rung's left-sited chroma, as
/// the decoder describes it, as centred.
fn chroma_site(caps: &gst::CapsRef, info: &gst_video::VideoInfo) -> gst_video::VideoChromaSite {
    caps.structure(0)
        .and_then(|s| s.get::<&str>("chroma-site").ok())
        .map_or_else(
            || info.chroma_site(),
            gst_video::VideoChromaSite::from_string,
        )
}

glib::wrapper! {
    /// The element: `video/x-raw` in one of [`FORMATS`] to the same format at the size
    /// downstream asks for (a capsfilter after it sets the size, as for `videoscale`).
    pub struct EdgeScale(ObjectSubclass<imp::EdgeScale>)
        @extends gst_video::VideoFilter, gst_video::gst_base::BaseTransform, gst::Element, gst::Object;
}

mod imp {
    use std::sync::{LazyLock, Mutex};

    use gstreamer as gst;
    use gstreamer::glib;
    use gstreamer::subclass::prelude::*;
    use gstreamer_video as gst_video;
    use gstreamer_video::gst_base::subclass::prelude::*;
    use gstreamer_video::prelude::*;
    use gstreamer_video::subclass::prelude::*;

    use super::FORMATS;
    use scale::PlaneScaler;

    /// The element's state: one scaler per plane, made for the negotiated sizes (`set_info`).
    #[derive(Default)]
    pub struct EdgeScale {
        planes: Mutex<Vec<PlaneScaler>>,
    }

    #[glib::object_subclass]
    impl ObjectSubclass for EdgeScale {
        const NAME: &'static str = "EdgeScale";
        type Type = super::EdgeScale;
        type ParentType = gst_video::VideoFilter;
    }

    impl ObjectImpl for EdgeScale {}

    impl GstObjectImpl for EdgeScale {}

    impl ElementImpl for EdgeScale {
        fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
            static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
                gst::subclass::ElementMetadata::new(
                    "edge scaler",
                    "Filter/Converter/Video/Scaler",
                    "Scales 8-bit planar video with a tent filter (the ladder's scaler)",
                    "edge",
                )
            });
            Some(&*META)
        }

        fn pad_templates() -> &'static [gst::PadTemplate] {
            static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
                let caps = gst_video::VideoCapsBuilder::new()
                    .format_list(FORMATS)
                    .build();
                [gst::PadDirection::Src, gst::PadDirection::Sink]
                    .into_iter()
                    .filter_map(|d| {
                        let name = if d == gst::PadDirection::Src {
                            "src"
                        } else {
                            "sink"
                        };
                        gst::PadTemplate::new(name, d, gst::PadPresence::Always, &caps).ok()
                    })
                    .collect()
            });
            TEMPLATES.as_ref()
        }
    }

    impl BaseTransformImpl for EdgeScale {
        const MODE: gst_video::gst_base::subclass::BaseTransformMode =
            gst_video::gst_base::subclass::BaseTransformMode::NeverInPlace;
        const PASSTHROUGH_ON_SAME_CAPS: bool = true;
        const TRANSFORM_IP_ON_PASSTHROUGH: bool = false;

        /// Any size (and pixel aspect ratio) on the other side; the format, frame rate and
        /// colorimetry stay.
        fn transform_caps(
            &self,
            _direction: gst::PadDirection,
            caps: &gst::Caps,
            filter: Option<&gst::Caps>,
        ) -> Option<gst::Caps> {
            let mut out = gst::Caps::new_empty();
            for (s, features) in caps.iter_with_features() {
                let mut s = s.to_owned();
                s.set("width", gst::IntRange::new(1, i32::MAX));
                s.set("height", gst::IntRange::new(1, i32::MAX));
                s.set(
                    "pixel-aspect-ratio",
                    gst::FractionRange::new(
                        gst::Fraction::new(1, i32::MAX),
                        gst::Fraction::new(i32::MAX, 1),
                    ),
                );
                out.merge_structure_full(s, Some(features.to_owned()));
            }
            Some(match filter {
                Some(f) => f.intersect_with_mode(&out, gst::CapsIntersectMode::First),
                None => out,
            })
        }
    }

    impl VideoFilterImpl for EdgeScale {
        /// One scaler per plane, from the input's plane sizes to the output's.
        fn set_info(
            &self,
            incaps: &gst::Caps,
            in_info: &gst_video::VideoInfo,
            _outcaps: &gst::Caps,
            out_info: &gst_video::VideoInfo,
        ) -> Result<(), gst::LoggableError> {
            if in_info.format() != out_info.format() {
                return Err(gst::loggable_error!(
                    gst::CAT_RUST,
                    "edgescale: input and output formats differ"
                ));
            }
            let mut planes = Vec::new();
            let site = super::chroma_site(incaps, in_info);
            let format = in_info.format_info();
            for p in 0..in_info.n_planes() {
                let sub = |subs: &[u32]| subs.get(p as usize).copied().unwrap_or(0);
                let phases = (
                    super::phase(
                        site.contains(gst_video::VideoChromaSite::H_COSITED),
                        sub(format.w_sub()),
                    ),
                    super::phase(
                        site.contains(gst_video::VideoChromaSite::V_COSITED),
                        sub(format.h_sub()),
                    ),
                );
                let p = p as u8;
                let scaler = PlaneScaler::sited(
                    in_info.comp_width(p) as usize,
                    in_info.comp_height(p) as usize,
                    out_info.comp_width(p) as usize,
                    out_info.comp_height(p) as usize,
                    phases,
                )
                .ok_or_else(|| gst::loggable_error!(gst::CAT_RUST, "edgescale: empty picture"))?;
                planes.push(scaler);
            }
            match self.planes.lock() {
                Ok(mut current) => {
                    *current = planes;
                    Ok(())
                }
                Err(_) => Err(gst::loggable_error!(gst::CAT_RUST, "edgescale: state lock")),
            }
        }

        fn transform_frame(
            &self,
            inframe: &gst_video::VideoFrameRef<&gst::BufferRef>,
            outframe: &mut gst_video::VideoFrameRef<&mut gst::BufferRef>,
        ) -> Result<gst::FlowSuccess, gst::FlowError> {
            let Ok(mut planes) = self.planes.lock() else {
                return Err(gst::FlowError::Error);
            };
            for (p, scaler) in planes.iter_mut().enumerate() {
                let stride = |strides: &[i32]| {
                    strides
                        .get(p)
                        .and_then(|s| usize::try_from(*s).ok())
                        .unwrap_or(0)
                };
                let (src_stride, dst_stride) = (
                    stride(inframe.plane_stride()),
                    stride(outframe.plane_stride()),
                );
                let input = inframe
                    .plane_data(p as u32)
                    .map_err(|_| gst::FlowError::Error)?;
                let output = outframe
                    .plane_data_mut(p as u32)
                    .map_err(|_| gst::FlowError::Error)?;
                if let Err(e) = scaler.scale(input, src_stride, output, dst_stride) {
                    gst::element_imp_error!(self, gst::StreamError::Failed, ["edgescale: {e}"]);
                    return Err(gst::FlowError::Error);
                }
            }
            Ok(gst::FlowSuccess::Ok)
        }
    }
}

#[cfg(test)]
#[path = "scale_test.rs"]
mod tests;
