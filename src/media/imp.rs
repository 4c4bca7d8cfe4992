//! Private inside of `media`: building the pipeline from its description, the appsink callback and
//! its overflow policy (block for files, drop oldest for live inputs), the bus watcher thread, and
//! the translation of GStreamer errors into [`MediaError`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError, select};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::description::{self, DECODE, DECODER_NAME, Params, RTP_OPUS, SINK_NAME, Template};
use super::{AudioChunk, DecodeSettings, MediaError, MediaEvent, RtpOpusInput, SAMPLE_RATE};

/// How long [`open`] waits for the first decoded audio to reach the sink (preroll). Errors that
/// happen before (unreadable input, no audio stream, missing decoder) are returned by `open`;
/// a source slower than this is handed over anyway and reports through the event channel.
pub(crate) const PREROLL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`open`] waits for a live pipeline to reach PLAYING (socket bound, threads started:
/// milliseconds in practice). It never waits for audio: a sender may start at any time.
pub(crate) const LIVE_START_TIMEOUT: Duration = Duration::from_secs(5);

/// Live inputs: what [`Source::live_edge`] allows, beyond the jitter buffer's latency, for a
/// packet to reach the appsink: the 20 ms `audiobuffersplit` may hold, decoding, resampling and
/// thread scheduling on a busy machine.
pub(crate) const LIVE_EDGE_MARGIN: Duration = Duration::from_millis(100);

/// Live inputs: the longest jump of the decoded timestamps *without* a discontinuity that is
/// taken as the sender's discontinuous transmission (DTX) and filled with silence. An Opus DTX
/// sender sends one packet every 400 ms during silence; sequence numbers stay contiguous, so the
/// jitter buffer sees no loss and the decoder output jumps without the DISCONT flag. Longer
/// jumps (a forwarder that paused a track, rewriting sequence numbers) stay gaps.
pub(crate) const MAX_DTX_FILL: Duration = Duration::from_secs(1);

/// Jumps shorter than this are timestamp jitter, not DTX (they are at least one 20 ms packet).
const MIN_DTX_FILL: Duration = Duration::from_millis(5);

/// Live inputs: timestamp jumps shorter than this (a few lost packets) are logged at debug level
/// only, longer ones (a sender that paused or restarted) at info. Either way they are gaps in
/// `first_sample`, which consumers count.
const LIVE_JUMP_LOG: i128 = SAMPLE_RATE as i128 / 5;

/// A buffer whose PTS is within this many samples of the expected position is taken as
/// contiguous (timestamp rounding, e.g. millisecond-resolution containers); beyond it, the PTS wins
/// and the difference is logged as a gap (or overlap). 16 samples = 1 ms.
pub(crate) const JITTER_TOLERANCE_SAMPLES: u64 = 16;

/// Name of the application message that tells the bus thread to exit.
const STOP_MESSAGE: &str = "soustitre-media-stop";

/// Name of the bus watcher thread (visible in `top -H`, debuggers and panics).
const BUS_THREAD_NAME: &str = "soustitre-media-bus";
/// Longest the bus thread waits for a message before checking whether its source was dropped.
const BUS_POLL: Duration = Duration::from_millis(100);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// State shared by the appsink callback (streaming thread), the decodebin pad signals (streaming
/// thread), the bus thread and the owning [`Source`].
pub(crate) struct Shared {
    input: String,
    /// The only sender of the event channel. Taken (and so dropped) by whoever sends the final
    /// event (Eos or Error), which ends the receiver. The streaming thread holds the lock while it
    /// blocks on a full channel, so the final event is always the last one.
    events: Mutex<Option<Sender<MediaEvent>>>,
    /// Disconnected when the [`Source`] is dropped: unblocks any send waiting on a full channel.
    stop: Receiver<()>,
    pub(crate) started_at: OnceLock<Instant>,
    /// Set once a decoded pad of uridecodebin got linked to audioconvert.
    audio_linked: AtomicBool,
    /// Caps names of the streams uridecodebin exposed, for the "no audio stream" message.
    streams: Mutex<Vec<String>>,
    /// Set when uridecodebin finished exposing streams and none was audio.
    no_audio: Mutex<Option<String>>,
    /// Missing-plugin messages seen so far: (description, relevant to audio decoding).
    missing: Mutex<Vec<(String, bool)>>,
    /// Set for live inputs: their overflow policy and its accounting.
    live: Option<Live>,
}

/// What only a live input has: the drop-oldest overflow policy.
struct Live {
    /// A receiver of the event channel, used to take the oldest chunk out when it is full.
    backlog: Receiver<MediaEvent>,
    /// Samples dropped so far.
    dropped: AtomicU64,
    /// Samples dropped in the current overflow episode; `None` while the consumer keeps up.
    /// Only touched under the `events` lock.
    episode: Mutex<Option<u64>>,
}

impl Shared {
    fn new(
        input: &str,
        events: Sender<MediaEvent>,
        stop: Receiver<()>,
        live: Option<Receiver<MediaEvent>>,
    ) -> Self {
        Self {
            input: input.to_owned(),
            events: Mutex::new(Some(events)),
            stop,
            started_at: OnceLock::new(),
            audio_linked: AtomicBool::new(false),
            streams: Mutex::new(Vec::new()),
            no_audio: Mutex::new(None),
            missing: Mutex::new(Vec::new()),
            live: live.map(|backlog| Live {
                backlog,
                dropped: AtomicU64::new(0),
                episode: Mutex::new(None),
            }),
        }
    }

    pub(crate) fn is_live(&self) -> bool {
        self.live.is_some()
    }

    /// Samples a live input dropped because the consumer fell behind (0 for files).
    pub(crate) fn dropped_samples(&self) -> u64 {
        self.live
            .as_ref()
            .map_or(0, |live| live.dropped.load(Ordering::Relaxed))
    }

    /// Sends one event. Files: blocks while the channel is full (back-pressure on the decoder).
    /// Live inputs: never blocks (see [`Shared::deliver_live`]).
    /// `Err` when the event channel is closed or the source is being dropped.
    fn deliver(&self, event: MediaEvent) -> Result<(), ()> {
        let events = lock(&self.events);
        let tx = events.as_ref().ok_or(())?;
        if let Some(live) = &self.live {
            return self.deliver_live(live, tx, event);
        }
        select! {
            send(tx, event) -> sent => sent.map_err(|_| ()),
            recv(self.stop) -> _ => Err(()),
        }
    }

    /// Live overflow policy: **drop oldest**. A socket cannot be back-pressured (blocking here
    /// would only move the loss into the kernel's receive buffer, with stale audio delivered
    /// late), so when the channel is full the oldest queued chunk is taken out and counted in
    /// [`Shared::dropped_samples`]. The consumer then sees the next chunk's `first_sample` jump
    /// over the dropped audio: the loss is a gap like any other, and the newest audio is kept,
    /// so captions catch up with the speaker instead of lagging further.
    ///
    /// Called with the `events` lock held (the only sender), so after one chunk is taken out the
    /// send cannot fail for lack of room.
    fn deliver_live(
        &self,
        live: &Live,
        tx: &Sender<MediaEvent>,
        mut event: MediaEvent,
    ) -> Result<(), ()> {
        loop {
            match tx.try_send(event) {
                Ok(()) => {
                    if let Some(samples) = lock(&live.episode).take() {
                        tracing::info!(
                            input = %self.input,
                            "media: consumer caught up with the live input after dropping {:.0} ms \
                             of audio ({:.0} ms in total)",
                            samples_ms(samples),
                            samples_ms(live.dropped.load(Ordering::Relaxed))
                        );
                    }
                    return Ok(());
                }
                Err(TrySendError::Disconnected(_)) => return Err(()),
                Err(TrySendError::Full(back)) => {
                    event = back;
                    // Empty: the consumer took a chunk meanwhile, and there is room now.
                    if let Ok(MediaEvent::Audio(oldest)) = live.backlog.try_recv() {
                        let samples = oldest.samples.len() as u64;
                        live.dropped.fetch_add(samples, Ordering::Relaxed);
                        let mut episode = lock(&live.episode);
                        if episode.is_none() {
                            tracing::warn!(
                                input = %self.input,
                                at_sample = oldest.first_sample,
                                "media: consumer is falling behind a live input: queue of {} \
                                 chunks full, dropping the oldest audio (reported as a gap)",
                                tx.capacity().unwrap_or_default()
                            );
                        }
                        *episode = Some(episode.unwrap_or(0) + samples);
                    }
                }
            }
        }
    }

    /// Sends the final event and closes the channel (the receiver ends after draining it).
    fn finish(&self, event: MediaEvent) {
        let mut events = lock(&self.events);
        if let Some(tx) = events.take() {
            select! {
                send(tx, event) -> _ => {},
                recv(self.stop) -> _ => {},
            }
        }
    }
}

/// A running decode pipeline. Dropping it stops the pipeline and joins the bus thread.
pub(crate) struct Source {
    pipeline: gst::Pipeline,
    bus: gst::Bus,
    pub(crate) shared: Arc<Shared>,
    stop: Option<Sender<()>>,
    bus_thread: Option<JoinHandle<()>>,
    /// Live inputs: how far behind the arrival clock audio reaches the appsink at most (jitter
    /// buffer latency + [`LIVE_EDGE_MARGIN`]).
    live_delay: Option<Duration>,
    /// False for a tap: the pipeline belongs to someone else, who starts and stops it.
    owned: bool,
}

impl Source {
    /// See [`super::AudioSource::live_edge`].
    pub(crate) fn live_edge(&self) -> Option<u64> {
        let delay = self.live_delay?;
        let now = self.pipeline.current_running_time()?;
        let edge = now.saturating_sub(clock_time(delay));
        Some(sample_index(edge))
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        // Order matters: first release a streaming thread blocked on a full channel, so that the
        // state change to NULL (which joins the streaming threads) cannot deadlock.
        drop(self.stop.take());
        if !self.owned {
            drop(lock(&self.shared.events).take());
            return;
        }
        let stop = gst::message::Application::new(gst::Structure::new_empty(STOP_MESSAGE));
        if self.bus.post(stop).is_err() {
            tracing::debug!("media: bus already flushing on drop");
        }
        if let Err(err) = self.pipeline.set_state(gst::State::Null) {
            tracing::warn!(input = %self.shared.input, "media: failed to stop pipeline: {err}");
        }
        if let Some(thread) = self.bus_thread.take()
            && thread.join().is_err()
        {
            tracing::warn!("media: bus thread panicked");
        }
        // Close the channel for any receiver clone that outlives the source.
        drop(lock(&self.shared.events).take());
    }
}

/// Opens `input`: an `rtp-opus://` URI builds `pipelines/rtp_opus.gst` and returns once it plays;
/// anything else builds `pipelines/decode.gst`, starts it and waits for preroll.
pub(crate) fn open(
    input: &str,
    settings: &DecodeSettings,
) -> Result<(Source, Receiver<MediaEvent>), MediaError> {
    settings.validate()?;
    if let Some(rtp) = RtpOpusInput::parse(input)? {
        return open_rtp_opus(input, &rtp, settings);
    }
    super::init()?;
    let uri = description::input_to_uri(input)?;
    let text = description::render(
        &DECODE,
        &Params {
            uri: &uri,
            sync: settings.realtime,
        },
    )?;
    tracing::debug!(input, pipeline = %text, "media: building decode pipeline");
    let pipeline = launch(&DECODE, &text)?;
    let decoder = pipeline
        .by_name(DECODER_NAME)
        .ok_or_else(|| missing_name(&DECODE, DECODER_NAME))?;
    let sink = app_sink(&DECODE, &pipeline)?;
    let bus = pipeline
        .bus()
        .ok_or_else(|| MediaError::Pipeline("pipeline has no bus".to_owned()))?;

    let (tx, rx) = crossbeam_channel::bounded(settings.queue_chunks);
    let (stop_tx, stop_rx) = crossbeam_channel::bounded(0);
    let shared = Arc::new(Shared::new(input, tx, stop_rx, None));
    watch_pads(&decoder, &shared);
    skip_video_decoders(&decoder);
    sink.set_callbacks(callbacks(Arc::clone(&shared), false));

    let mut source = Source {
        pipeline,
        bus,
        shared,
        stop: Some(stop_tx),
        bus_thread: None,
        live_delay: None,
        owned: true,
    };
    // From here on, dropping `source` on an early return stops everything cleanly.
    start(&source)?;
    wait_preroll(&source)?;
    spawn_bus_thread(&mut source)?;
    Ok((source, rx))
}

/// Builds `pipelines/rtp_opus.gst` for `rtp` and returns as soon as it is PLAYING (the socket is
/// bound): no audio is awaited, a sender may start at any time. The time origin (sample 0 and
/// `started_at`) is that moment, so audio that starts later begins with a gap.
fn open_rtp_opus(
    input: &str,
    rtp: &RtpOpusInput,
    settings: &DecodeSettings,
) -> Result<(Source, Receiver<MediaEvent>), MediaError> {
    super::init()?;
    let text = description::render(&RTP_OPUS, rtp)?;
    tracing::debug!(input, pipeline = %text, "media: building live RTP/Opus pipeline");
    let pipeline = launch(&RTP_OPUS, &text)?;
    let sink = app_sink(&RTP_OPUS, &pipeline)?;
    let bus = pipeline
        .bus()
        .ok_or_else(|| MediaError::Pipeline("pipeline has no bus".to_owned()))?;

    let (tx, rx) = crossbeam_channel::bounded(settings.queue_chunks);
    let (stop_tx, stop_rx) = crossbeam_channel::bounded(0);
    let shared = Arc::new(Shared::new(input, tx, stop_rx, Some(rx.clone())));
    // Statically linked: errors are never about a missing audio stream.
    shared.audio_linked.store(true, Ordering::SeqCst);
    let decoder = pipeline
        .by_name(DECODER_NAME)
        .ok_or_else(|| missing_name(&RTP_OPUS, DECODER_NAME))?;
    fill_dtx_silence(&decoder, input)?;
    sink.set_callbacks(callbacks(Arc::clone(&shared), false));

    let mut source = Source {
        pipeline,
        bus,
        shared,
        stop: Some(stop_tx),
        bus_thread: None,
        live_delay: Some(Duration::from_millis(rtp.jitter_ms.into()) + LIVE_EDGE_MARGIN),
        owned: true,
    };
    start(&source)?;
    let (reached, current, pending) = source.pipeline.state(Some(clock_time(LIVE_START_TIMEOUT)));
    if reached.is_err() {
        return Err(error_on_bus(&source).unwrap_or_else(|| {
            MediaError::Pipeline("live pipeline failed to start (no error on the bus)".to_owned())
        }));
    }
    if current != gst::State::Playing {
        tracing::warn!(
            input,
            "media: live pipeline still {current:?} (to {pending:?}) after {LIVE_START_TIMEOUT:?}; \
             continuing in the background"
        );
    }
    // Sample index 0 is running time 0: the wall-clock instant `current_running_time` ago.
    let running = source
        .pipeline
        .current_running_time()
        .map_or(Duration::ZERO, |t| Duration::from_nanos(t.nseconds()));
    let origin = Instant::now()
        .checked_sub(running)
        .unwrap_or_else(Instant::now);
    source.shared.started_at.get_or_init(|| origin);
    tracing::info!(
        input,
        address = %rtp.address,
        port = rtp.port,
        payload = rtp.payload,
        jitter_ms = rtp.jitter_ms,
        "media: listening for RTP/Opus"
    );
    spawn_bus_thread(&mut source)?;
    Ok((source, rx))
}

/// A live branch of a pipeline owned by the caller (an SFU room: one `webrtcbin` per peer and one
/// branch per remote audio track, all in one pipeline). `sink` is the branch's appsink, `decoder`
/// its Opus decoder (watched for DTX silences like the `rtp-opus://` input's). The caller starts
/// and stops the pipeline and removes the branch; it ends the stream with [`Shared::end`].
///
/// Sample 0 is running time 0 of `pipeline` (`started_at`), shared by all branches of the room,
/// so every track of a room counts samples on one timeline.
pub(crate) fn open_tap(
    input: &str,
    pipeline: &gst::Pipeline,
    sink: &gst_app::AppSink,
    decoder: &gst::Element,
    started_at: Instant,
    jitter: Duration,
    settings: &DecodeSettings,
) -> Result<(Source, Receiver<MediaEvent>), MediaError> {
    settings.validate()?;
    let bus = pipeline
        .bus()
        .ok_or_else(|| MediaError::Pipeline("pipeline has no bus".to_owned()))?;
    let (tx, rx) = crossbeam_channel::bounded(settings.queue_chunks);
    let (stop_tx, stop_rx) = crossbeam_channel::bounded(0);
    let shared = Arc::new(Shared::new(input, tx, stop_rx, Some(rx.clone())));
    shared.audio_linked.store(true, Ordering::SeqCst);
    shared.started_at.get_or_init(|| started_at);
    fill_dtx_silence(decoder, input)?;
    sink.set_callbacks(callbacks(Arc::clone(&shared), true));
    let source = Source {
        pipeline: pipeline.clone(),
        bus,
        shared,
        stop: Some(stop_tx),
        bus_thread: None,
        live_delay: Some(jitter + LIVE_EDGE_MARGIN),
        owned: false,
    };
    Ok((source, rx))
}

impl Shared {
    /// Ends the stream of a tap: `event` (Eos, or the error that ended it) is its last event.
    pub(crate) fn end(&self, event: MediaEvent) {
        self.finish(event);
    }
}

/// Fills the silences of a DTX sender with zeros, on the Opus decoder's output (S16LE), so that
/// they reach the consumer as silence (the VAD sees the speaker stop, finals come on time)
/// instead of as lost audio. Only jumps without the DISCONT flag, of at most [`MAX_DTX_FILL`],
/// are filled: lost or late packets, and a new stream after a pause, come with DISCONT (the
/// jitter buffer's) and stay gaps. Observed on 1.22 with `opusenc dtx=true ! rtpopuspay
/// dtx=true`: during 2 s of silence, one 3-byte packet every 400 ms, each decoded to 20 ms
/// followed by a 380 ms jump without DISCONT.
fn fill_dtx_silence(decoder: &gst::Element, input: &str) -> Result<(), MediaError> {
    let pad = decoder.static_pad("src").ok_or_else(|| {
        MediaError::Pipeline(format!(
            "element `{DECODER_NAME}` of {} has no src pad",
            RTP_OPUS.file
        ))
    })?;
    let input = input.to_owned();
    // End (PTS + duration) of the previous decoded buffer.
    let expected = Mutex::new(None::<gst::ClockTime>);
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        let Some(gst::PadProbeData::Buffer(buffer)) = info.data.as_mut() else {
            return gst::PadProbeReturn::Ok;
        };
        let (Some(pts), Some(duration)) = (buffer.pts(), buffer.duration()) else {
            *lock(&expected) = None;
            return gst::PadProbeReturn::Ok;
        };
        let previous = lock(&expected).replace(pts + duration);
        let jump = previous.and_then(|end| pts.checked_sub(end));
        let Some(jump) = jump.filter(|jump| {
            !buffer.flags().contains(gst::BufferFlags::DISCONT)
                && (clock_time(MIN_DTX_FILL)..=clock_time(MAX_DTX_FILL)).contains(jump)
        }) else {
            return gst::PadProbeReturn::Ok;
        };
        match with_leading_silence(pad, buffer, jump) {
            Some(filled) => {
                tracing::trace!(input, "media: DTX silence of {} ms filled", jump.mseconds());
                *buffer = filled;
            }
            None => tracing::debug!(input, "media: cannot fill a DTX silence: unexpected format"),
        }
        gst::PadProbeReturn::Ok
    })
    .ok_or_else(|| MediaError::Pipeline("cannot watch the Opus decoder's output".to_owned()))?;
    Ok(())
}

/// `buffer` preceded by `silence` of zeros, starting that much earlier. `None` unless the pad's
/// caps are interleaved S16LE (what `opusdec` produces).
fn with_leading_silence(
    pad: &gst::Pad,
    buffer: &gst::Buffer,
    silence: gst::ClockTime,
) -> Option<gst::Buffer> {
    let caps = pad.current_caps()?;
    let s = caps.structure(0)?;
    if s.get::<&str>("format").ok()? != "S16LE" {
        return None;
    }
    let rate = u64::try_from(s.get::<i32>("rate").ok()?).ok()?;
    let channels = usize::try_from(s.get::<i32>("channels").ok()?).ok()?;
    let frames = silence
        .nseconds()
        .mul_div_round(rate, gst::ClockTime::SECOND.nseconds())?;
    let zeros = usize::try_from(frames).ok()? * channels * 2;
    let map = buffer.map_readable().ok()?;
    let mut data = vec![0_u8; zeros + map.size()];
    data[zeros..].copy_from_slice(map.as_slice());
    drop(map);
    let mut filled = gst::Buffer::from_mut_slice(data);
    {
        let filled = filled.get_mut()?;
        let start = buffer.pts()? - silence;
        filled.set_pts(start);
        filled.set_duration(buffer.duration()? + silence);
    }
    Some(filled)
}

/// Sets the pipeline PLAYING; a refusal is reported with the error the bus holds.
fn start(source: &Source) -> Result<(), MediaError> {
    if source.pipeline.set_state(gst::State::Playing).is_err() {
        return Err(error_on_bus(source).unwrap_or_else(|| {
            MediaError::Pipeline("pipeline refused to start (no error on the bus)".to_owned())
        }));
    }
    Ok(())
}

fn spawn_bus_thread(source: &mut Source) -> Result<(), MediaError> {
    let bus = source.bus.clone();
    let shared = Arc::clone(&source.shared);
    let thread = std::thread::Builder::new()
        .name(BUS_THREAD_NAME.to_owned())
        .spawn(move || bus_loop(&bus, &shared))
        .map_err(|e| MediaError::Pipeline(format!("cannot spawn {BUS_THREAD_NAME}: {e}")))?;
    source.bus_thread = Some(thread);
    Ok(())
}

fn app_sink(template: &Template, pipeline: &gst::Pipeline) -> Result<gst_app::AppSink, MediaError> {
    pipeline
        .by_name(SINK_NAME)
        .ok_or_else(|| missing_name(template, SINK_NAME))?
        .downcast::<gst_app::AppSink>()
        .map_err(|_| {
            MediaError::Pipeline(format!(
                "element `{SINK_NAME}` of {} is not an appsink",
                template.file
            ))
        })
}

fn missing_name(template: &Template, name: &str) -> MediaError {
    MediaError::Pipeline(format!("{} has no element named `{name}`", template.file))
}

fn clock_time(duration: Duration) -> gst::ClockTime {
    gst::ClockTime::from_nseconds(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX))
}

fn samples_ms(samples: u64) -> f64 {
    samples as f64 * 1000.0 / f64::from(SAMPLE_RATE)
}

/// `gst_parse_launch` with missing elements reported as [`MediaError::MissingPlugin`].
pub(crate) fn launch(template: &Template, text: &str) -> Result<gst::Pipeline, MediaError> {
    let mut context = gst::ParseContext::new();
    let element = gst::parse::launch_full(text, Some(&mut context), gst::ParseFlags::FATAL_ERRORS)
        .map_err(|err| {
            let missing = context.missing_elements();
            if err.matches(gst::ParseError::NoSuchElement) || !missing.is_empty() {
                MediaError::MissingPlugin(if missing.is_empty() {
                    err.message().to_owned()
                } else {
                    missing.join(", ")
                })
            } else {
                MediaError::Pipeline(format!("cannot build {}: {}", template.file, err.message()))
            }
        })?;
    element.downcast::<gst::Pipeline>().map_err(|_| {
        MediaError::Pipeline(format!("{} does not describe a pipeline", template.file))
    })
}

/// Tracks which decoded streams uridecodebin exposes. `gst_parse_launch` already connected its
/// delayed-link handler to `pad-added`; ours runs after it, so `is_linked()` tells whether the
/// pad went to audioconvert (i.e. it is the audio stream we decode).
fn watch_pads(decoder: &gst::Element, shared: &Arc<Shared>) {
    let on_pad = Arc::clone(shared);
    decoder.connect_pad_added(move |_, pad| {
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        let kind = caps
            .structure(0)
            .map_or_else(|| "unknown".to_owned(), |s| s.name().to_string());
        if pad.is_linked() {
            on_pad.audio_linked.store(true, Ordering::SeqCst);
            tracing::debug!(input = %on_pad.input, "media: decoding stream {kind}");
        } else {
            tracing::debug!(input = %on_pad.input, "media: ignoring stream {kind}");
        }
        lock(&on_pad.streams).push(kind);
    });
    let on_done = Arc::clone(shared);
    decoder.connect_no_more_pads(move |element| {
        if on_done.audio_linked.load(Ordering::SeqCst) {
            return;
        }
        let streams = lock(&on_done.streams).join(", ");
        let detail = if streams.is_empty() {
            "no audio stream".to_owned()
        } else {
            format!("no audio stream (found {streams})")
        };
        *lock(&on_done.no_audio) = Some(detail.clone());
        let error = gst::message::Error::builder(gst::StreamError::WrongType, &detail)
            .src(element)
            .build();
        if element.post_message(error).is_err() {
            tracing::warn!("media: could not post the no-audio error");
        }
    });
}

/// `GstAutoplugSelectResult` values (registered by the playback plugin, not in the bindings).
const AUTOPLUG_TRY: i32 = 0;
const AUTOPLUG_EXPOSE: i32 = 1;

/// Keeps uridecodebin from decoding streams we would discard: when it is about to plug a video or
/// image decoder, the stream is exposed still encoded instead (and stays unlinked). Saves the CPU
/// of decoding the video of a recorded meeting, and the decoder's complaints about negotiating
/// with nothing.
fn skip_video_decoders(decoder: &gst::Element) {
    let Some(result_type) = gst::glib::Type::from_name("GstAutoplugSelectResult") else {
        tracing::warn!("media: GstAutoplugSelectResult not registered; video streams get decoded");
        return;
    };
    decoder.connect("autoplug-select", false, move |args| {
        let factory = args.get(3)?.get::<gst::ElementFactory>().ok()?;
        let klass = factory.klass();
        let visual =
            klass.contains("Decoder") && (klass.contains("Video") || klass.contains("Image"));
        let choice = if visual {
            AUTOPLUG_EXPOSE
        } else {
            AUTOPLUG_TRY
        };
        gst::glib::EnumClass::with_type(result_type)?.to_value(choice)
    });
}

/// The appsink callback. Runs on the streaming thread: copy, stamp, send; nothing else.
///
/// `tap`: the branch lives in a pipeline shared with other streams (an SFU room): once its
/// consumer is gone, buffers are discarded instead of returning FLUSHING, which would travel
/// upstream into elements the other streams share.
fn callbacks(shared: Arc<Shared>, tap: bool) -> gst_app::AppSinkCallbacks {
    let mut next_sample = 0_u64;
    gst_app::AppSinkCallbacks::builder()
        .new_sample(move |sink| {
            let sample = sink.pull_sample().map_err(|_| gst::FlowError::Flushing)?;
            // A live input's origin is set by `open` (the moment it started playing).
            if !shared.is_live() {
                shared.started_at.get_or_init(Instant::now);
            }
            let Some(buffer) = sample.buffer() else {
                return Ok(gst::FlowSuccess::Ok);
            };
            let samples = {
                let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
                f32_from_le(map.as_slice())
            };
            let position = buffer.pts().map(|pts| {
                let running = sample
                    .segment()
                    .and_then(|segment| segment.downcast_ref::<gst::ClockTime>())
                    .and_then(|segment| segment.to_running_time(pts));
                sample_index(running.unwrap_or(pts))
            });
            let (first_sample, jump) = place(position, next_sample);
            if let Some(jump) = jump
                && shared.is_live()
            {
                log_live_jump(&shared.input, next_sample, first_sample, jump);
            } else if let Some(jump) = jump {
                tracing::warn!(
                    input = %shared.input,
                    first_sample,
                    "media: timestamp discontinuity of {jump} samples ({:.1} ms)",
                    jump as f64 * 1000.0 / f64::from(SAMPLE_RATE)
                );
            }
            next_sample = first_sample + samples.len() as u64;
            let chunk = AudioChunk {
                samples,
                first_sample,
            };
            match shared.deliver(MediaEvent::Audio(chunk)) {
                Ok(()) => Ok(gst::FlowSuccess::Ok),
                Err(()) if tap => Ok(gst::FlowSuccess::Ok),
                Err(()) => Err(gst::FlowError::Flushing),
            }
        })
        .build()
}

/// Timestamp jumps are ordinary for a live input (the sender starts late, pauses, loses
/// packets): logged, not warned about. Consumers see and count them as gaps.
fn log_live_jump(input: &str, expected: u64, first_sample: u64, jump: i128) {
    let ms = jump as f64 * 1000.0 / f64::from(SAMPLE_RATE);
    if expected == 0 {
        tracing::info!(input, "media: first live audio {ms:.0} ms after the start");
    } else if jump.abs() >= LIVE_JUMP_LOG {
        tracing::info!(
            input,
            first_sample,
            "media: live audio resumed after {ms:.0} ms without audio"
        );
    } else {
        tracing::debug!(
            input,
            first_sample,
            "media: live timestamp jump of {ms:.1} ms"
        );
    }
}

/// Interleaved little-endian f32 bytes to samples.
pub(crate) fn f32_from_le(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Stream position to sample index at [`SAMPLE_RATE`], rounded to nearest.
pub(crate) fn sample_index(position: gst::ClockTime) -> u64 {
    let scaled =
        (u128::from(position.nseconds()) * u128::from(SAMPLE_RATE) + 500_000_000) / 1_000_000_000;
    u64::try_from(scaled).unwrap_or(u64::MAX)
}

/// Where a chunk starts: the expected position when its timestamp agrees within
/// [`JITTER_TOLERANCE_SAMPLES`] (or it has none), else its timestamp. Also returns the jump
/// (positive: gap, negative: overlap) when the timestamp wins.
pub(crate) fn place(position: Option<u64>, expected: u64) -> (u64, Option<i128>) {
    match position {
        Some(at) if at.abs_diff(expected) > JITTER_TOLERANCE_SAMPLES => {
            (at, Some(i128::from(at) - i128::from(expected)))
        }
        _ => (expected, None),
    }
}

/// What one bus message means for the source.
enum Step {
    Continue,
    Prerolled,
    Eos,
    Failed(MediaError),
    Stop,
}

fn classify(shared: &Shared, pipeline: Option<&gst::Pipeline>, msg: &gst::Message) -> Step {
    use gst::MessageView;
    match msg.view() {
        MessageView::Eos(_) => Step::Eos,
        MessageView::Error(err) => {
            let extra = err.debug();
            tracing::debug!(input = %shared.input, "media: bus error: {} ({extra:?})", err.error());
            let origin = msg.src().map(|src| src.name().to_string());
            Step::Failed(map_error(
                shared,
                &err.error(),
                origin.as_deref(),
                extra.as_deref(),
            ))
        }
        MessageView::Warning(warning) => {
            tracing::warn!(
                input = %shared.input,
                "media: {} ({})",
                warning.error(),
                warning.debug().as_deref().map(one_line).unwrap_or_default()
            );
            Step::Continue
        }
        MessageView::Element(element) => {
            if let Some(s) = element.structure()
                && s.name() == "missing-plugin"
            {
                record_missing(shared, s);
            }
            Step::Continue
        }
        MessageView::AsyncDone(_)
            if pipeline.is_some_and(|p| msg.src() == Some(p.upcast_ref::<gst::Object>())) =>
        {
            Step::Prerolled
        }
        MessageView::Application(app)
            if app.structure().is_some_and(|s| s.name() == STOP_MESSAGE) =>
        {
            Step::Stop
        }
        _ => Step::Continue,
    }
}

fn record_missing(shared: &Shared, s: &gst::StructureRef) {
    let kind = s.get::<&str>("type").unwrap_or("element");
    let detail = s
        .get::<gst::Caps>("detail")
        .ok()
        .and_then(|caps| caps.structure(0).map(|st| st.name().to_string()))
        .or_else(|| s.get::<String>("detail").ok())
        .unwrap_or_default();
    let name = s
        .get::<String>("name")
        .unwrap_or_else(|_| format!("{kind} for {detail}"));
    // A missing video/image/subtitle decoder does not stop us from decoding audio.
    let relevant = !(kind == "decoder"
        && [
            "video/",
            "image/",
            "text/",
            "subpicture/",
            "application/x-subtitle",
        ]
        .iter()
        .any(|prefix| detail.starts_with(prefix)));
    tracing::info!(input = %shared.input, relevant, "media: missing plugin: {name} ({kind}, {detail})");
    lock(&shared.missing).push((name, relevant));
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// One line from a GStreamer error: its message, the element that posted it, and the reason from
/// the debug text when there is one (the debug text's first line is a source location and the
/// element's path; the rest is the reason, e.g. "streaming stopped, reason not-linked (-1)").
fn describe(message: &str, origin: Option<&str>, debug: Option<&str>) -> String {
    let reason = debug
        .and_then(|debug| debug.split_once('\n'))
        .map(|(_, reason)| one_line(reason))
        .filter(|reason| !reason.is_empty());
    match (origin, reason) {
        (Some(origin), Some(reason)) => format!("{message} ({origin}: {reason})"),
        (Some(origin), None) => format!("{message} ({origin})"),
        (None, Some(reason)) => format!("{message} ({reason})"),
        (None, None) => message.to_owned(),
    }
}

/// Translates a GStreamer error (domain + code) into the layer's error type.
fn map_error(
    shared: &Shared,
    err: &gst::glib::Error,
    origin: Option<&str>,
    debug: Option<&str>,
) -> MediaError {
    let input = shared.input.clone();
    if let Some(detail) = lock(&shared.no_audio).clone() {
        return MediaError::NotAudio { input, detail };
    }
    let detail = describe(err.message(), origin, debug);
    let audio_linked = shared.audio_linked.load(Ordering::SeqCst);
    let (relevant, other): (Vec<_>, Vec<_>) =
        lock(&shared.missing).iter().cloned().partition(|m| m.1);
    let names = |list: Vec<(String, bool)>| {
        list.into_iter()
            .map(|(name, _)| name)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let missing_plugin =
        err.matches(gst::CoreError::MissingPlugin) || err.matches(gst::StreamError::CodecNotFound);
    if !relevant.is_empty() && (missing_plugin || !audio_linked) {
        return MediaError::MissingPlugin(names(relevant));
    }
    if missing_plugin {
        return if other.is_empty() {
            MediaError::MissingPlugin(detail)
        } else {
            MediaError::NotAudio {
                input,
                detail: format!("no decodable audio stream (missing {})", names(other)),
            }
        };
    }
    if let Some(code) = err.kind::<gst::StreamError>() {
        use gst::StreamError as S;
        return match code {
            S::TypeNotFound | S::WrongType | S::Decode | S::Demux | S::Format => {
                MediaError::NotAudio { input, detail }
            }
            S::Failed | S::NotImplemented if !audio_linked => {
                MediaError::NotAudio { input, detail }
            }
            _ => MediaError::Pipeline(detail),
        };
    }
    if let Some(code) = err.kind::<gst::ResourceError>() {
        use gst::ResourceError as R;
        return match code {
            R::NotFound => MediaError::NotFound(input),
            R::OpenRead | R::OpenReadWrite | R::Read | R::NotAuthorized => MediaError::NotAudio {
                input,
                detail: format!("unreadable: {detail}"),
            },
            _ => MediaError::Pipeline(detail),
        };
    }
    MediaError::Pipeline(detail)
}

/// After a failed state change: the reason is (normally) an error message already on the bus.
fn error_on_bus(source: &Source) -> Option<MediaError> {
    while let Some(msg) = source.bus.pop() {
        if let Step::Failed(err) = classify(&source.shared, None, &msg) {
            return Some(err);
        }
    }
    None
}

/// Reads the bus until the pipeline has prerolled (first audio at the sink), failed, or reached
/// EOS without audio, for at most [`PREROLL_TIMEOUT`].
fn wait_preroll(source: &Source) -> Result<(), MediaError> {
    let deadline = Instant::now() + PREROLL_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            tracing::warn!(
                input = %source.shared.input,
                "media: no audio after {PREROLL_TIMEOUT:?}; continuing in the background"
            );
            return Ok(());
        }
        let Some(msg) = source.bus.timed_pop(clock_time(left)) else {
            continue;
        };
        match classify(&source.shared, Some(&source.pipeline), &msg) {
            Step::Continue | Step::Stop => {}
            Step::Prerolled => return Ok(()),
            Step::Failed(err) => return Err(err),
            Step::Eos => {
                source.shared.finish(MediaEvent::Eos);
                return Ok(());
            }
        }
    }
}

/// The bus thread: turns EOS and errors into the final event, logs warnings, then exits. It
/// also exits once the [`Source`] is dropped: the stop message posted then can be flushed
/// away by the pipeline going to NULL before this thread reads it, so the wait is bounded by
/// [`BUS_POLL`] and the stop channel's disconnection checked in between.
fn bus_loop(bus: &gst::Bus, shared: &Shared) {
    loop {
        let Some(msg) = bus.timed_pop(clock_time(BUS_POLL)) else {
            if matches!(
                shared.stop.try_recv(),
                Err(crossbeam_channel::TryRecvError::Disconnected)
            ) {
                return;
            }
            continue;
        };
        match classify(shared, None, &msg) {
            Step::Continue | Step::Prerolled => {}
            Step::Stop => return,
            Step::Eos => {
                shared.finish(MediaEvent::Eos);
                return;
            }
            Step::Failed(err) => {
                tracing::warn!(input = %shared.input, "media: {err}");
                shared.finish(MediaEvent::Error(err));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_index_rounds_to_nearest() {
        assert_eq!(sample_index(gst::ClockTime::ZERO), 0);
        assert_eq!(sample_index(gst::ClockTime::from_seconds(1)), 16_000);
        // 62.5 us per sample: 31_250 ns rounds up to 1, 31_249 down to 0.
        assert_eq!(sample_index(gst::ClockTime::from_nseconds(31_250)), 1);
        assert_eq!(sample_index(gst::ClockTime::from_nseconds(31_249)), 0);
        assert_eq!(sample_index(gst::ClockTime::from_mseconds(5_545)), 88_720);
    }

    #[test]
    fn placement_keeps_contiguity_and_reports_gaps() {
        assert_eq!(place(Some(0), 0), (0, None));
        assert_eq!(place(None, 480), (480, None));
        // Millisecond-rounded container timestamps stay contiguous.
        assert_eq!(place(Some(490), 480), (480, None));
        assert_eq!(place(Some(470), 480), (480, None));
        // A 100 ms hole is counted in the index.
        assert_eq!(place(Some(2080), 480), (2080, Some(1600)));
        // An overlap is reported as such.
        assert_eq!(place(Some(100), 480), (100, Some(-380)));
        // A stream that starts late.
        assert_eq!(place(Some(1600), 0), (1600, Some(1600)));
    }

    fn chunk(first_sample: u64) -> MediaEvent {
        MediaEvent::Audio(AudioChunk {
            samples: vec![0.0; 320],
            first_sample,
        })
    }

    fn first_sample(event: MediaEvent) -> u64 {
        match event {
            MediaEvent::Audio(chunk) => chunk.first_sample,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_live_input_drops_the_oldest_chunk_and_never_waits() {
        let (tx, rx) = crossbeam_channel::bounded(2);
        let (_stop_tx, stop_rx) = crossbeam_channel::bounded(0);
        let shared = Shared::new("rtp-opus://test", tx, stop_rx, Some(rx.clone()));
        // Nobody reads: every delivery returns at once, the newest two chunks stay.
        for i in 0..5 {
            shared.deliver(chunk(i * 320)).unwrap();
        }
        assert_eq!(shared.dropped_samples(), 3 * 320);
        assert_eq!(first_sample(rx.try_recv().unwrap()), 3 * 320);
        // The consumer catches up; later audio is not dropped.
        shared.deliver(chunk(5 * 320)).unwrap();
        assert_eq!(first_sample(rx.try_recv().unwrap()), 4 * 320);
        assert_eq!(first_sample(rx.try_recv().unwrap()), 5 * 320);
        assert_eq!(shared.dropped_samples(), 3 * 320);
        // The final event still closes the channel.
        shared.finish(MediaEvent::Eos);
        assert_eq!(rx.try_recv(), Ok(MediaEvent::Eos));
        assert!(shared.deliver(chunk(6 * 320)).is_err());
    }

    #[test]
    fn a_file_input_waits_for_room() {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(0);
        let shared = Arc::new(Shared::new("file.wav", tx, stop_rx, None));
        shared.deliver(chunk(0)).unwrap();
        let blocked = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || shared.deliver(chunk(320)))
        };
        // The blocked delivery completes when the consumer makes room, and nothing is lost.
        assert_eq!(
            first_sample(rx.recv_timeout(Duration::from_secs(10)).unwrap()),
            0
        );
        assert_eq!(
            first_sample(rx.recv_timeout(Duration::from_secs(10)).unwrap()),
            320
        );
        blocked.join().unwrap().unwrap();
        assert_eq!(shared.dropped_samples(), 0);
        // A delivery blocked on a full channel is released by the stop signal.
        shared.deliver(chunk(640)).unwrap();
        let blocked = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || shared.deliver(chunk(960)))
        };
        drop(stop_tx);
        assert!(blocked.join().unwrap().is_err());
    }

    #[test]
    fn error_descriptions_are_one_line() {
        let debug = "../libs/gst/base/gstbasesrc.c(3132): gst_base_src_loop (): /GstPipeline:p/X:src:\nstreaming stopped, reason not-linked (-1)";
        assert_eq!(
            describe("Internal data stream error.", Some("qtdemux0"), Some(debug)),
            "Internal data stream error. (qtdemux0: streaming stopped, reason not-linked (-1))"
        );
        assert_eq!(
            describe(
                "Could not determine type of stream.",
                Some("typefind"),
                Some("x.c(1): f (): /P")
            ),
            "Could not determine type of stream. (typefind)"
        );
        assert_eq!(describe("Boom.", None, None), "Boom.");
    }

    #[test]
    fn f32_conversion() {
        let bytes: Vec<u8> = [0.5_f32, -1.0, 0.25]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(f32_from_le(&bytes), vec![0.5, -1.0, 0.25]);
        assert_eq!(f32_from_le(&bytes[..7]), vec![0.5]);
    }

    #[test]
    fn unknown_element_is_a_missing_plugin() {
        super::super::init().unwrap();
        let err = launch(
            &DECODE,
            "audiotestsrc ! soustitre_no_such_element ! fakesink",
        )
        .unwrap_err();
        assert_eq!(
            err,
            MediaError::MissingPlugin("soustitre_no_such_element".to_owned())
        );
        let err = launch(&RTP_OPUS, "audiotestsrc ! ! fakesink").unwrap_err();
        assert!(
            matches!(err, MediaError::Pipeline(ref m) if m.contains("pipelines/rtp_opus.gst")),
            "{err}"
        );
    }

    #[test]
    fn a_bus_error_after_start_is_the_last_event() {
        let wav = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/corpus/dev/utterances/synth/en_01.wav"
        );
        let settings = DecodeSettings {
            realtime: true,
            queue_chunks: 2,
        };
        let (source, events) = open(wav, &settings).unwrap();
        assert!(matches!(events.recv().unwrap(), MediaEvent::Audio(_)));
        let error = gst::message::Error::builder(gst::CoreError::Failed, "injected failure")
            .src(&source.pipeline)
            .build();
        source.bus.post(error).unwrap();
        let mut last = None;
        while let Ok(event) = events.recv_timeout(Duration::from_secs(30)) {
            last = Some(event);
        }
        assert!(events.is_empty());
        match last {
            Some(MediaEvent::Error(MediaError::Pipeline(detail))) => {
                assert!(detail.starts_with("injected failure"), "{detail}");
            }
            other => panic!("expected a pipeline error last, got {other:?}"),
        }
        // The channel is closed, not just quiet.
        assert!(matches!(
            events.recv_timeout(Duration::from_millis(1)),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected)
        ));
    }

    #[test]
    fn quoted_uri_survives_gst_parse() {
        super::super::init().unwrap();
        let uri = r#"http://example.org/a "quoted" \back slash {rate}.ogg"#;
        let text = description::render(&DECODE, &Params { uri, sync: true }).unwrap();
        let pipeline = launch(&DECODE, &text).unwrap();
        let decoder = pipeline.by_name(DECODER_NAME).unwrap();
        assert_eq!(
            decoder.property::<Option<String>>("uri").as_deref(),
            Some(uri)
        );
        let sink = pipeline.by_name(SINK_NAME).unwrap();
        assert!(sink.property::<bool>("sync"));
    }
}
