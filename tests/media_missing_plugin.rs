//! A decoder that is not installed must surface as `MediaError::MissingPlugin`.
//!
//! Simulated by demoting every Opus decoder to rank NONE in this process's registry (decodebin only
//! auto-plugs elements of rank MARGINAL or above). It lives in its own test binary because the
//! registry change is process-wide.

use std::path::Path;
use std::process::Command;

use gstreamer as gst;
use gstreamer::prelude::*;
use soustitre::media::{self, AudioSource, DecodeSettings, MediaError};

#[test]
fn undecodable_codec_is_a_missing_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let opus = dir.path().join("en01.opus");
    let wav = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/corpus/dev/utterances/synth/en_01.wav");
    let status = Command::new("gst-launch-1.0")
        .arg("-q")
        .args([
            "filesrc",
            &format!("location={}", wav.display()),
            "!",
            "wavparse",
            "!",
        ])
        .args([
            "audioconvert",
            "!",
            "audioresample",
            "!",
            "opusenc",
            "!",
            "oggmux",
            "!",
        ])
        .args(["filesink", &format!("location={}", opus.display())])
        .status()
        .unwrap();
    assert!(status.success());

    media::init().unwrap();
    let decoders = gst::ElementFactory::factories_with_type(
        gst::ElementFactoryType::DECODER | gst::ElementFactoryType::MEDIA_AUDIO,
        gst::Rank::NONE,
    );
    let opus_caps = gst::Caps::builder("audio/x-opus").build();
    let mut demoted = Vec::new();
    for factory in decoders {
        if factory.can_sink_any_caps(&opus_caps) {
            factory.set_rank(gst::Rank::NONE);
            demoted.push(factory.name().to_string());
        }
    }
    assert!(
        !demoted.is_empty(),
        "no Opus decoder installed to begin with"
    );

    let err = AudioSource::open(opus.to_str().unwrap(), &DecodeSettings::default()).unwrap_err();
    println!("demoted {demoted:?}: {err}");
    assert!(
        matches!(err, MediaError::MissingPlugin(ref name) if name.contains("Opus")),
        "{err}"
    );
}
