//! Integration tests of `soustitre::media` against real GStreamer pipelines and the shared corpus
//! (`../shared/corpus/dev`). Converted fixtures are made on the fly with `gst-launch-1.0` in a
//! temporary directory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use soustitre::media::{
    AudioChunk, AudioSource, DecodeSettings, MediaError, MediaEvent, SAMPLE_RATE,
};

/// Generous bound for one event: a hung pipeline fails the test instead of hanging CI.
const EVENT_TIMEOUT: Duration = Duration::from_secs(60);

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/dev")
}

fn en_01() -> PathBuf {
    corpus().join("utterances/synth/en_01.wav")
}

/// A 16-bit PCM WAV read directly from its RIFF chunks.
struct Wav {
    rate: u32,
    channels: u16,
    samples: Vec<i16>,
}

fn read_wav(path: &Path) -> Wav {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[0..4], b"RIFF");
    assert_eq!(&bytes[8..12], b"WAVE");
    let (mut rate, mut channels, mut bits) = (0, 0, 0);
    let mut pos = 12;
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let len = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap()) as usize;
        let body = &bytes[pos + 8..(pos + 8 + len).min(bytes.len())];
        match id {
            b"fmt " => {
                assert_eq!(u16::from_le_bytes([body[0], body[1]]), 1, "PCM");
                channels = u16::from_le_bytes([body[2], body[3]]);
                rate = u32::from_le_bytes(body[4..8].try_into().unwrap());
                bits = u16::from_le_bytes([body[14], body[15]]);
            }
            b"data" => {
                assert_eq!(bits, 16);
                let samples = body
                    .chunks_exact(2)
                    .map(|b| i16::from_le_bytes([b[0], b[1]]))
                    .collect();
                return Wav {
                    rate,
                    channels,
                    samples,
                };
            }
            _ => {}
        }
        pos += 8 + len + (len & 1);
    }
    panic!("{}: no data chunk", path.display());
}

fn write_wav(path: &Path, rate: u32, samples: &[i16]) {
    let data_len = (samples.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + samples.len() * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16_u32.to_le_bytes());
    out.extend_from_slice(&1_u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1_u16.to_le_bytes()); // mono
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 2).to_le_bytes());
    out.extend_from_slice(&2_u16.to_le_bytes());
    out.extend_from_slice(&16_u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(path, out).unwrap();
}

/// Duration in the corpus manifest (rounded to the millisecond).
fn manifest_duration(rel: &str) -> f64 {
    let text = std::fs::read_to_string(corpus().join("manifest.tsv")).unwrap();
    let header: Vec<&str> = text.lines().next().unwrap().split('\t').collect();
    let path_col = header.iter().position(|h| *h == "path").unwrap();
    let dur_col = header.iter().position(|h| *h == "duration_s").unwrap();
    text.lines()
        .skip(1)
        .map(|line| line.split('\t').collect::<Vec<_>>())
        .find(|cols| cols[path_col] == rel)
        .map(|cols| cols[dur_col].parse().unwrap())
        .unwrap_or_else(|| panic!("{rel} not in manifest.tsv"))
}

/// Runs `gst-launch-1.0` on `pipeline`, split on whitespace *before* `{name}` tokens are replaced
/// by `files`, so paths with spaces stay one argument (gst-launch escapes each argument).
fn gst_launch(pipeline: &str, files: &[(&str, &Path)]) {
    let args: Vec<String> = pipeline
        .split_whitespace()
        .map(|arg| {
            files.iter().fold(arg.to_owned(), |arg, (name, path)| {
                arg.replace(&format!("{{{name}}}"), path.to_str().unwrap())
            })
        })
        .collect();
    let status = Command::new("gst-launch-1.0")
        .arg("-q")
        .args(&args)
        .status()
        .expect("gst-launch-1.0 (gstreamer1.0-tools) must be installed");
    assert!(status.success(), "gst-launch-1.0 {args:?}");
}

fn has_element(name: &str) -> bool {
    Command::new("gst-inspect-1.0")
        .args(["--exists", name])
        .status()
        .is_ok_and(|s| s.success())
}

/// Reads every event until the end. Returns the chunks and the final event, and checks that the
/// channel closes right after it.
fn drain(source: &AudioSource) -> (Vec<AudioChunk>, MediaEvent) {
    let mut chunks = Vec::new();
    loop {
        let event = source
            .receiver()
            .recv_timeout(EVENT_TIMEOUT)
            .expect("event within the timeout");
        match event {
            MediaEvent::Audio(chunk) => chunks.push(chunk),
            last => {
                assert!(
                    source.receiver().recv_timeout(EVENT_TIMEOUT).is_err(),
                    "channel must close after {last:?}"
                );
                return (chunks, last);
            }
        }
    }
}

/// Decodes a whole input, asserting EOS, contiguous chunks from 0, and a started_at instant.
fn decode(input: &str, settings: &DecodeSettings) -> Vec<f32> {
    let source = AudioSource::open(input, settings).unwrap_or_else(|e| panic!("{input}: {e}"));
    let (chunks, last) = drain(&source);
    assert_eq!(last, MediaEvent::Eos);
    assert!(source.started_at().is_some());
    let mut next = 0;
    for chunk in &chunks {
        assert_eq!(chunk.first_sample, next, "chunks must be contiguous");
        assert!(!chunk.samples.is_empty());
        next = chunk.end_sample();
    }
    chunks.into_iter().flat_map(|c| c.samples).collect()
}

fn open_err(input: &Path) -> MediaError {
    match AudioSource::open(input.to_str().unwrap(), &DecodeSettings::default()) {
        Ok(source) => panic!("{}: expected an error, got {source:?}", input.display()),
        Err(err) => err,
    }
}

/// Best normalised cross-correlation of `b` against `a` over lags in `-max_lag..=max_lag`,
/// on a window of `a` starting at `start`.
fn best_correlation(a: &[f32], b: &[f32], start: usize, len: usize, max_lag: usize) -> (f64, i64) {
    let wa = &a[start..start + len];
    let energy_a: f64 = wa.iter().map(|x| f64::from(*x).powi(2)).sum();
    let mut best = (f64::MIN, 0);
    for lag in -(max_lag as i64)..=max_lag as i64 {
        let from = (start as i64 + lag) as usize;
        let wb = &b[from..from + len];
        let energy_b: f64 = wb.iter().map(|x| f64::from(*x).powi(2)).sum();
        let dot: f64 = wa
            .iter()
            .zip(wb)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum();
        let corr = dot / (energy_a * energy_b).sqrt().max(1e-12);
        if corr > best.0 {
            best = (corr, lag);
        }
    }
    best
}

#[test]
fn wav_decodes_to_the_exact_samples() {
    let wav = read_wav(&en_01());
    assert_eq!((wav.rate, wav.channels), (SAMPLE_RATE, 1));
    // The manifest's duration agrees with the header to the millisecond (88 720 vs 88 717).
    let from_manifest = manifest_duration("utterances/synth/en_01.wav") * f64::from(SAMPLE_RATE);
    assert!((from_manifest - wav.samples.len() as f64).abs() <= 16.0);

    let decoded = decode(en_01().to_str().unwrap(), &DecodeSettings::default());
    assert_eq!(decoded.len(), wav.samples.len(), "exact sample count");
    for (i, (got, want)) in decoded.iter().zip(&wav.samples).enumerate() {
        let want = f32::from(*want) / 32768.0;
        assert!((got - want).abs() <= 1e-6, "sample {i}: {got} != {want}");
    }
}

#[test]
fn file_uri_and_relative_path_are_accepted() {
    let wav = read_wav(&en_01());
    let uri = gstreamer::glib::filename_to_uri(en_01().canonicalize().unwrap(), None).unwrap();
    let decoded = decode(&uri, &DecodeSettings::default());
    assert_eq!(decoded.len(), wav.samples.len());
    // Tests run with the crate root as working directory.
    let relative = "../shared/corpus/dev/utterances/synth/en_01.wav";
    assert_eq!(decode(relative, &DecodeSettings::default()), decoded);
}

#[test]
fn ogg_opus_decodes_to_16k_mono_of_the_same_length() {
    let dir = tempfile::tempdir().unwrap();
    let opus = dir.path().join("en 01.opus");
    gst_launch(
        "filesrc location={in} ! wavparse ! audioconvert ! audioresample ! opusenc ! oggmux \
         ! filesink location={out}",
        &[("in", &en_01()), ("out", &opus)],
    );
    check_converted(&opus, 0.9);
}

#[test]
fn stereo_44k1_wav_decodes_to_16k_mono_of_the_same_length() {
    let dir = tempfile::tempdir().unwrap();
    let stereo = dir.path().join("en01-44k1-stereo.wav");
    gst_launch(
        "filesrc location={in} ! wavparse ! audioconvert ! audioresample \
         ! audio/x-raw,rate=44100,channels=2 ! wavenc ! filesink location={out}",
        &[("in", &en_01()), ("out", &stereo)],
    );
    let converted = read_wav(&stereo);
    assert_eq!((converted.rate, converted.channels), (44_100, 2));
    check_converted(&stereo, 0.99);
}

/// A converted copy of en_01 must come out as 16 kHz mono: same duration within 30 ms, and the
/// same waveform (a stereo or wrong-rate output would fail both).
fn check_converted(path: &Path, min_correlation: f64) {
    let original: Vec<f32> = read_wav(&en_01())
        .samples
        .iter()
        .map(|s| f32::from(*s) / 32768.0)
        .collect();
    let decoded = decode(path.to_str().unwrap(), &DecodeSettings::default());
    let seconds = |n: usize| n as f64 / f64::from(SAMPLE_RATE);
    let diff = (seconds(decoded.len()) - seconds(original.len())).abs();
    assert!(
        diff <= 0.030,
        "{}: decoded {:.4} s, original {:.4} s",
        path.display(),
        seconds(decoded.len()),
        seconds(original.len())
    );
    // One second of speech from the middle, searched over ±25 ms of codec/resampler delay.
    let (corr, lag) = best_correlation(&original, &decoded, 32_000, 16_000, 400);
    assert!(
        corr >= min_correlation,
        "{}: correlation {corr:.3} at lag {lag}",
        path.display()
    );
}

#[test]
fn realtime_mode_delivers_the_same_samples() {
    let dir = tempfile::tempdir().unwrap();
    let excerpt = dir.path().join("excerpt-2s.wav");
    let wav = read_wav(&en_01());
    write_wav(&excerpt, SAMPLE_RATE, &wav.samples[16_000..48_000]);
    let input = excerpt.to_str().unwrap();
    let fast = decode(input, &DecodeSettings::default());
    let paced = decode(
        input,
        &DecodeSettings {
            realtime: true,
            ..DecodeSettings::default()
        },
    );
    assert_eq!(fast.len(), 32_000);
    assert_eq!(paced, fast);
}

#[test]
fn small_queue_back_pressures_without_loss() {
    let settings = DecodeSettings {
        queue_chunks: 1,
        ..DecodeSettings::default()
    };
    let source = AudioSource::open(en_01().to_str().unwrap(), &settings).unwrap();
    // Let the decoder run into the full channel before reading anything.
    std::thread::sleep(Duration::from_millis(200));
    let (chunks, last) = drain(&source);
    assert_eq!(last, MediaEvent::Eos);
    let total: usize = chunks.iter().map(|c| c.samples.len()).sum();
    assert_eq!(total, read_wav(&en_01()).samples.len());
}

#[test]
fn dropping_a_blocked_source_does_not_hang() {
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let settings = DecodeSettings {
            queue_chunks: 1,
            realtime: false,
        };
        let long = corpus().join("meetings/en_3spk/meeting.wav");
        let source = AudioSource::open(long.to_str().unwrap(), &settings).unwrap();
        let first = source.receiver().recv_timeout(EVENT_TIMEOUT).unwrap();
        assert!(matches!(first, MediaEvent::Audio(ref c) if c.first_sample == 0));
        // The streaming thread is now blocked on the full channel.
        std::thread::sleep(Duration::from_millis(100));
        drop(source);
        done_tx.send(()).unwrap();
    });
    done_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("drop must stop a pipeline blocked on a full channel");
}

#[test]
fn nonexistent_path_is_not_found() {
    let err = open_err(Path::new("/nonexistent/soustitre/none.wav"));
    assert_eq!(
        err,
        MediaError::NotFound("/nonexistent/soustitre/none.wav".to_owned())
    );
    let err =
        AudioSource::open("file:///nonexistent/none.ogg", &DecodeSettings::default()).unwrap_err();
    assert!(matches!(err, MediaError::NotFound(_)), "{err}");
}

#[test]
fn text_file_is_not_audio() {
    let err = open_err(&corpus().join("utterances/synth/en_01.txt"));
    assert!(matches!(err, MediaError::NotAudio { .. }), "{err}");
    println!("{err}");
}

#[test]
fn garbage_bytes_are_not_audio() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.wav");
    // Deterministic pseudo-random bytes (xorshift), not a recognisable format.
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let bytes: Vec<u8> = (0..20_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    std::fs::write(&garbage, bytes).unwrap();
    let err = open_err(&garbage);
    assert!(matches!(err, MediaError::NotAudio { .. }), "{err}");
    println!("{err}");
}

#[test]
fn image_is_not_audio() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("frame.png");
    gst_launch(
        "videotestsrc num-buffers=1 ! video/x-raw,width=64,height=48 ! pngenc ! filesink location={out}",
        &[("out", &png)],
    );
    let err = open_err(&png);
    assert!(matches!(err, MediaError::NotAudio { .. }), "{err}");
    println!("{err}");
}

#[test]
fn directory_is_not_audio() {
    let dir = tempfile::tempdir().unwrap();
    let err = open_err(dir.path());
    assert!(matches!(err, MediaError::NotAudio { .. }), "{err}");
}

/// First available video encoder, for making video fixtures.
fn video_encoder() -> Option<&'static str> {
    ["x264enc", "avenc_mpeg4", "vp8enc"]
        .into_iter()
        .find(|name| has_element(name))
}

#[test]
fn video_only_file_is_not_audio() {
    let Some(encoder) = video_encoder() else {
        eprintln!("skipped: no video encoder (x264enc, avenc_mpeg4, vp8enc) installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let video = dir.path().join("video-only.mkv");
    gst_launch(
        &format!(
            "videotestsrc num-buffers=30 ! video/x-raw,width=160,height=120 ! {encoder} \
             ! matroskamux ! filesink location={{out}}"
        ),
        &[("out", &video)],
    );
    let err = open_err(&video);
    assert!(
        matches!(err, MediaError::NotAudio { ref detail, .. } if detail.contains("no audio stream")),
        "{err}"
    );
    println!("{err}");
}

#[test]
fn video_with_audio_decodes_the_audio() {
    let Some(encoder) = video_encoder() else {
        eprintln!("skipped: no video encoder (x264enc, avenc_mpeg4, vp8enc) installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let movie = dir.path().join("movie.mkv");
    gst_launch(
        &format!(
            "matroskamux name=mux ! filesink location={{out}} \
             videotestsrc num-buffers=50 ! video/x-raw,width=160,height=120,framerate=25/1 \
             ! {encoder} ! mux. \
             filesrc location={{in}} ! wavparse ! audioconvert ! audioresample ! opusenc ! mux."
        ),
        &[("in", &en_01()), ("out", &movie)],
    );
    check_converted(&movie, 0.9);
}
