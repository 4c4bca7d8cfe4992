//! Media in: decode any file or URI GStreamer can read, or receive a live RTP/Opus stream, into
//! 16 kHz mono `f32` samples.
//!
//! The pipelines' shapes live in `pipelines/decode.gst` (files and URIs) and
//! `pipelines/rtp_opus.gst` (live `rtp-opus://ADDRESS:PORT[?payload=96&jitter_ms=60]` inputs, what
//! an SFU or a gateway forwards), in gst-launch syntax commented for operators; this module fills
//! in their placeholders, builds them, and turns what comes out of the appsink and the bus into a
//! stream of [`MediaEvent`]s on a bounded channel:
//!
//! ```text
//! uridecodebin ──────────────────────────────────▶ audioconvert ─▶ audioresample ─▶ F32LE/16 kHz/mono ─▶ appsink
//! udpsrc ─▶ rtpjitterbuffer ─▶ rtpopusdepay ─▶ opusdec ─┘                                                │
//!                                                                          callback: copy + stamp + send  │
//!                                                 bounded channel (queue_chunks) ◀───────────────────────┘
//!                                                          │
//!                                          AudioSource::receiver() ─▶ vad / asr workers
//! ```
//!
//! # Threads
//! * GStreamer streaming threads run the decoder and the appsink callback, which only copies the
//!   buffer into an [`AudioChunk`], stamps it and sends it.
//! * One small named thread (`soustitre-media-bus`) watches the bus: EOS becomes
//!   [`MediaEvent::Eos`], an error becomes [`MediaEvent::Error`]; either one is the last event and
//!   closes the channel (the receiver then ends). No GLib main loop is needed.
//!
//! # Overflow policy
//! The channel holds at most [`DecodeSettings::queue_chunks`] chunks.
//! * Files and URIs: **block.** When the channel is full the appsink callback waits, which
//!   back-pressures the decoder. Nothing is ever dropped, and memory stays bounded whatever the
//!   input length. Dropping the [`AudioSource`] releases a waiting callback at once.
//! * Live inputs (`rtp-opus://`): **drop oldest.** A socket cannot be back-pressured: blocking
//!   the streaming thread would only move the loss to the kernel's receive buffer and deliver stale
//!   audio late. When the channel is full, the oldest queued chunk is taken out and counted in
//!   [`AudioSource::dropped_samples`] (with a warning when an overflow episode starts and a note
//!   when the consumer catches up). The consumer sees the next chunk's `first_sample` jump over the
//!   dropped audio, so the loss is a gap like a lost packet: captions are never made up over it,
//!   and they catch up with the speaker instead of lagging further.
//!
//! # Errors
//! For files and URIs, [`AudioSource::open`] waits for the first decoded audio to reach the sink
//! (preroll, bounded by 10 s), so an input that is missing, unreadable, not decodable, without an
//! audio stream, or that needs a plugin that is not installed is reported by `open` itself,
//! promptly. A live input is checked before anything is built (a malformed or out-of-range
//! `rtp-opus://` URI is [`MediaError::InvalidSettings`] naming the bad part: `address`, `port`,
//! `payload`, `jitter_ms`, `query` or `path`); `open` then returns as soon as the pipeline plays
//! (socket bound: a port in use is an error from `open`), without waiting for audio, since a
//! sender may start at any time. Errors later in the stream (corrupt data, network failure) arrive
//! as [`MediaEvent::Error`].
//!
//! # Live inputs
//! * Never end by themselves: no EOS comes from a socket. The input ends when the
//!   [`AudioSource`] is dropped (or on an error).
//! * [`DecodeSettings::realtime`] does not apply: the network paces the audio.
//! * Lost time is visible, never concealed: a lost packet, a late packet (beyond the jitter
//!   buffer's latency), a sender that pauses or restarts (new SSRC, sequence numbers and RTP
//!   timestamps), or audio dropped by the overflow policy all show as a jump in `first_sample`,
//!   which consumers turn into a gap. Observed with GStreamer 1.22 on loopback: a lost 20 ms
//!   packet gives a +20 ms jump (the jitter buffer stamps the next packet from the RTP clock and
//!   marks it DISCONT; `opusdec` does no concealment without the jitter buffer's lost events, which
//!   are off); a sender that stops and another that starts 2.03 s later give a jump of 2.03 s
//!   (the jitter buffer resynchronises on the new stream and stamps it with its arrival time).
//! * Silence is not loss: a sender using Opus DTX (discontinuous transmission; WebRTC senders
//!   often do) sends one packet every 400 ms while nobody speaks. Its sequence numbers stay
//!   contiguous, so the decoder's timestamps jump *without* the DISCONT flag; such jumps (up to
//!   1 s) are filled with zeros on the decoder's output, so the silence reaches the consumer as
//!   silence and the VAD ends segments on time. Observed: 2 s of silence sent with DTX arrive as
//!   2 s of zeros, no jump.
//! * A sender that stops sends nothing more, so nothing more is delivered: the gap shows only
//!   when audio resumes, and `audiobuffersplit` holds the stream's last < 20 ms until then.
//!   [`AudioSource::live_edge`] tells a consumer how far the audio should have reached, so that it
//!   can count the silence of a stopped sender as lost without waiting for the next packet.
//!
//! # Timestamps
//! [`AudioChunk::first_sample`] is the index of the chunk's first sample since stream start,
//! `round(t_ns * 16000 / 1e9)` where `t` is the running time of the buffer PTS (equal to the PTS
//! for ordinary files). Deviations of up to 1 ms from the expected position are taken as timestamp
//! rounding and the index stays contiguous; larger jumps are kept (gaps are counted in the index)
//! and logged (warnings for files; for live inputs, where they are expected, at info level for
//! pauses and debug level for a few lost packets).
//!
//! For a live input, stream start (sample 0, and [`AudioSource::started_at`]) is the moment the
//! pipeline started playing, just before `open` returned; the jitter buffer stamps packets with
//! their arrival time on that clock, smoothed along the RTP timestamps. So audio that starts `s`
//! seconds after `open` has its first sample near `s * 16000` (the wait is a leading gap), and
//! sample `i` arrived at about `started_at + i / 16000 s` whatever the pauses, like the samples
//! of a file played at real time. Clock drift between sender and receiver is absorbed by the jitter
//! buffer and `audiobuffersplit`, which resynchronises when it exceeds 40 ms (then a 40 ms jump).
//!
//! # Latency model
//! * Chunk: one decoded buffer, as the demuxer/decoder produces it. Measured: 16 kHz WAV 2048
//!   samples (128 ms); Ogg/Opus 320 samples (20 ms). Plus the resampler's filter delay when the
//!   rate changes (well under 1 ms at the default quality).
//! * Compute: conversion and resampling are far below 1 ms per chunk (en_01.wav, 5.5 s, decodes
//!   in ~30 ms on the 2-core dev machine, plugin loading included; the 49 s meeting in ~40 ms).
//! * Queue: up to `queue_chunks` chunks if the consumer lags (back-pressure, not loss); at the
//!   default 64 that is ~8 s of WAV audio or ~1.3 s of Opus.
//! * Start: `open` returns after preroll (a few ms for local files); for a live input, as soon as
//!   it plays (a few ms).
//! * Live inputs add the jitter buffer's latency (`jitter_ms`, default 60 ms) and the Opus
//!   decoder's delay (6.5 ms): a sample reaches the appsink about `jitter_ms` + 7 ms after its
//!   packet arrived. Their chunks are 20 ms (one Opus packet), and their queue never waits.
//! * With `realtime = true` the appsink releases each chunk when the pipeline clock reaches the
//!   chunk's *start*; a live capture would deliver it at its end, one chunk later. Consumers that
//!   measure caption latency from [`AudioSource::started_at`] should count a sample as available
//!   at `started_at + (index + 1) / 16000 s`.
//!
//! # Example
//! ```no_run
//! use soustitre::media::{AudioSource, DecodeSettings, MediaEvent};
//! let source = AudioSource::open("meeting.ogg", &DecodeSettings::default())?;
//! for event in source.receiver() {
//!     match event {
//!         MediaEvent::Audio(chunk) => println!("{} samples at {}", chunk.samples.len(), chunk.first_sample),
//!         MediaEvent::Eos => break,
//!         MediaEvent::Error(err) => return Err(err.into()),
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod description;
mod imp;
mod rtp;
mod wav;
pub use wav::{WavError, read_wav_mono16k};

pub use rtp::{
    DEFAULT_JITTER_MS, DEFAULT_RTP_PAYLOAD, MAX_JITTER_MS, MAX_RTP_PAYLOAD, MIN_RTP_PAYLOAD,
    RTP_OPUS_SCHEME, RtpOpusInput,
};

use std::sync::OnceLock;
use std::time::Instant;

use crossbeam_channel::Receiver;

/// The sample rate of every [`AudioChunk`] (what the VAD and ASR models consume).
pub const SAMPLE_RATE: u32 = 16_000;

/// Default capacity of the event channel, in chunks (a few seconds of audio for typical chunk
/// sizes; each chunk is one decoded buffer).
pub const DEFAULT_QUEUE_CHUNKS: usize = 64;

/// Upper bound for [`DecodeSettings::queue_chunks`]: beyond it the queue stops being a buffer
/// and becomes a memory problem.
pub const MAX_QUEUE_CHUNKS: usize = 4096;

/// Whether decoding is paced at real time by default.
pub const DEFAULT_REALTIME: bool = false;

/// How an [`AudioSource`] decodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeSettings {
    /// Pace delivery at real time against the pipeline clock (appsink `sync=true`), as a live
    /// track would arrive. `false` decodes as fast as the consumer takes the chunks. Ignored by
    /// live inputs, which the network paces.
    pub realtime: bool,
    /// Capacity of the bounded event channel, in chunks (1..=[`MAX_QUEUE_CHUNKS`]). Live inputs
    /// drop their oldest chunk when it is full; files wait.
    pub queue_chunks: usize,
}

impl Default for DecodeSettings {
    fn default() -> Self {
        Self {
            realtime: DEFAULT_REALTIME,
            queue_chunks: DEFAULT_QUEUE_CHUNKS,
        }
    }
}

impl DecodeSettings {
    /// Checks every field; called by [`AudioSource::open`] before anything is built.
    pub fn validate(&self) -> Result<(), MediaError> {
        if !(1..=MAX_QUEUE_CHUNKS).contains(&self.queue_chunks) {
            return Err(MediaError::InvalidSettings {
                field: "queue_chunks",
                reason: format!(
                    "must be between 1 and {MAX_QUEUE_CHUNKS}, got {}",
                    self.queue_chunks
                ),
            });
        }
        Ok(())
    }
}

/// A run of decoded samples: 16 kHz, mono, `f32` in [-1, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct AudioChunk {
    pub samples: Vec<f32>,
    /// Index of `samples[0]` counted from stream start (from the buffer PTS; gaps are counted).
    pub first_sample: u64,
}

impl AudioChunk {
    /// Index one past the last sample of this chunk.
    pub fn end_sample(&self) -> u64 {
        self.first_sample + self.samples.len() as u64
    }
}

/// What an [`AudioSource`] delivers. `Eos` or `Error` is always the last event.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaEvent {
    Audio(AudioChunk),
    Eos,
    Error(MediaError),
}

/// Errors of the media layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    /// The path (or `file://` URI, or remote resource) does not exist.
    #[error("input not found: {0}")]
    NotFound(String),
    /// Unreadable, not decodable, or without an audio stream (a text file, an image, a video...).
    #[error("not an audio input: {input}: {detail}")]
    NotAudio { input: String, detail: String },
    /// A GStreamer element or decoder the input needs is not installed.
    #[error("missing GStreamer plugin: {0}")]
    MissingPlugin(String),
    /// Anything else GStreamer reported (message and debug detail).
    #[error("GStreamer pipeline error: {0}")]
    Pipeline(String),
    /// A [`DecodeSettings`] field is out of range, or a part of an `rtp-opus://` input is
    /// malformed or out of range (`field` names it: `address`, `port`, `payload`, `jitter_ms`,
    /// `query`, `path`).
    #[error("invalid media setting `{field}`: {reason}")]
    InvalidSettings { field: &'static str, reason: String },
    /// `gst_init` failed.
    #[error("cannot initialise GStreamer: {0}")]
    Init(String),
}

/// Initialises GStreamer once per process; later calls return the first result.
pub fn init() -> Result<(), MediaError> {
    static INIT: OnceLock<Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| gstreamer::init().map_err(|e| e.to_string()))
        .clone()
        .map_err(MediaError::Init)
}

/// A decoding pipeline for one input. Owns the pipeline: dropping it stops decoding (state NULL)
/// and joins its bus thread.
pub struct AudioSource {
    // Field order: the source (pipeline) is stopped before the receiver goes away.
    inner: imp::Source,
    events: Receiver<MediaEvent>,
}

impl AudioSource {
    /// Opens a file path or URI and starts decoding (state PLAYING). Returns once the first audio
    /// reached the sink, or with the error that prevented it.
    ///
    /// An `rtp-opus://ADDRESS:PORT[?payload=96&jitter_ms=60]` input (see [`RtpOpusInput`]) is
    /// received live instead: `open` returns once the socket is bound and the pipeline plays,
    /// without waiting for a sender, and the source never reaches EOS.
    pub fn open(input: &str, settings: &DecodeSettings) -> Result<AudioSource, MediaError> {
        let (inner, events) = imp::open(input, settings)?;
        Ok(AudioSource { inner, events })
    }

    /// The event stream. Ends (disconnects) after `Eos` or `Error`.
    pub fn receiver(&self) -> &Receiver<MediaEvent> {
        &self.events
    }

    /// A live branch of a pipeline the caller owns, e.g. one remote audio track of an SFU room
    /// (see `crate::sfu`): `sink` is the branch's appsink (F32LE, [`SAMPLE_RATE`], mono), `decoder`
    /// its Opus decoder. The overflow policy, gap accounting and DTX filling are those of a live
    /// input. Sample 0 is running time 0 of `pipeline`, the instant `started_at`, for every
    /// branch of that pipeline. The stream ends when the returned [`LiveTap`] ends it (the
    /// caller removes the branch first); dropping the source only stops its delivery.
    pub fn tap(
        input: &str,
        pipeline: &gstreamer::Pipeline,
        sink: &gstreamer_app::AppSink,
        decoder: &gstreamer::Element,
        started_at: Instant,
        jitter: std::time::Duration,
        settings: &DecodeSettings,
    ) -> Result<(AudioSource, LiveTap), MediaError> {
        let (inner, events) =
            imp::open_tap(input, pipeline, sink, decoder, started_at, jitter, settings)?;
        let tap = LiveTap {
            shared: std::sync::Arc::clone(&inner.shared),
        };
        Ok((AudioSource { inner, events }, tap))
    }

    /// Wall-clock instant the first sample reached the appsink: the time origin for caption
    /// latency. `None` until then. For a live input, the instant the pipeline started playing
    /// (sample index 0), set as soon as `open` returns.
    pub fn started_at(&self) -> Option<Instant> {
        self.inner.shared.started_at.get().copied()
    }

    /// Whether the input is live (`rtp-opus://`): no EOS, drop-oldest overflow policy.
    pub fn is_live(&self) -> bool {
        self.inner.shared.is_live()
    }

    /// Samples a live input dropped because the consumer fell behind (the overflow policy);
    /// always 0 for files and URIs, which wait instead.
    pub fn dropped_samples(&self) -> u64 {
        self.inner.shared.dropped_samples()
    }

    /// A handle that ends this source's stream early, from any thread (an interrupted
    /// transcription): the consumer receives what was already queued, then `Eos`.
    pub fn ender(&self) -> SourceEnder {
        SourceEnder {
            shared: std::sync::Arc::clone(&self.inner.shared),
        }
    }

    /// Live inputs: the sample index below which all audio has had time to arrive (the arrival
    /// clock now, minus the jitter buffer's latency and a 100 ms margin for decoding). `None` for
    /// files and URIs.
    ///
    /// A live source that stops sending delivers nothing more, not even a gap (the gap only shows
    /// when audio resumes). A consumer that received nothing for a while can count the audio
    /// between what it has and this edge as lost, e.g. to close a caption whose speaker went
    /// silent by stopping the stream. Audio that still arrives below the edge is late: treat it as
    /// an overlap (skip the samples already accounted for).
    pub fn live_edge(&self) -> Option<u64> {
        self.inner.live_edge()
    }
}

/// A fresh instance of `pipelines/webrtc_audio.gst`: the branch that turns one remote RTP/Opus
/// track into 16 kHz mono samples. Returns the bin (its sink pad takes the RTP), its appsink and
/// its Opus decoder, ready for [`AudioSource::tap`].
pub fn webrtc_audio_branch()
-> Result<(gstreamer::Bin, gstreamer_app::AppSink, gstreamer::Element), MediaError> {
    use gstreamer::prelude::*;
    init()?;
    let template = &description::WEBRTC_AUDIO;
    let text = description::render(template, &description::NoParams)?;
    let bin = gstreamer::parse::bin_from_description(&text, true).map_err(|e| {
        if e.matches(gstreamer::ParseError::NoSuchElement) {
            MediaError::MissingPlugin(e.message().to_owned())
        } else {
            MediaError::Pipeline(format!("cannot build {}: {}", template.file, e.message()))
        }
    })?;
    let missing = |name: &str| {
        MediaError::Pipeline(format!("{} has no element named `{name}`", template.file))
    };
    let sink = bin
        .by_name(description::SINK_NAME)
        .ok_or_else(|| missing(description::SINK_NAME))?
        .downcast::<gstreamer_app::AppSink>()
        .map_err(|_| missing(description::SINK_NAME))?;
    let decoder = bin
        .by_name(description::DECODER_NAME)
        .ok_or_else(|| missing(description::DECODER_NAME))?;
    Ok((bin, sink, decoder))
}

/// Ends an [`AudioSource`]'s stream early (see [`AudioSource::ender`]).
#[derive(Clone)]
pub struct SourceEnder {
    shared: std::sync::Arc<imp::Shared>,
}

impl SourceEnder {
    /// Ends the stream: `Eos` follows what was already queued. Idempotent.
    pub fn end(&self) {
        self.shared.end(MediaEvent::Eos);
    }
}

/// The producer's end of a tapped [`AudioSource`]: ends its stream.
pub struct LiveTap {
    shared: std::sync::Arc<imp::Shared>,
}

impl LiveTap {
    /// Ends the stream normally (the remote track went away): `Eos` is its last event.
    pub fn end(&self) {
        self.shared.end(MediaEvent::Eos);
    }

    /// Ends the stream with an error.
    pub fn fail(&self, error: MediaError) {
        self.shared.end(MediaEvent::Error(error));
    }
}

impl std::fmt::Debug for AudioSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioSource")
            .field("started_at", &self.started_at())
            .field("live", &self.is_live())
            .field("queued", &self.events.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_settings_are_valid() {
        let settings = DecodeSettings::default();
        assert_eq!(settings.queue_chunks, DEFAULT_QUEUE_CHUNKS);
        assert!(!settings.realtime);
        settings.validate().unwrap();
    }

    #[test]
    fn queue_bounds_are_checked() {
        for bad in [0, MAX_QUEUE_CHUNKS + 1] {
            let err = DecodeSettings {
                queue_chunks: bad,
                ..DecodeSettings::default()
            }
            .validate()
            .unwrap_err();
            assert!(
                matches!(
                    err,
                    MediaError::InvalidSettings {
                        field: "queue_chunks",
                        ..
                    }
                ),
                "{err}"
            );
            assert!(err.to_string().contains("queue_chunks"), "{err}");
        }
        for good in [1, MAX_QUEUE_CHUNKS] {
            DecodeSettings {
                queue_chunks: good,
                realtime: true,
            }
            .validate()
            .unwrap();
        }
    }

    #[test]
    fn open_validates_before_touching_the_input() {
        let settings = DecodeSettings {
            queue_chunks: 0,
            ..DecodeSettings::default()
        };
        let err = AudioSource::open("/nonexistent.wav", &settings).unwrap_err();
        assert!(matches!(err, MediaError::InvalidSettings { .. }), "{err}");
    }

    #[test]
    fn init_is_idempotent() {
        init().unwrap();
        init().unwrap();
    }
}
