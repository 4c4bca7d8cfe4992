//! One captioned source of a room: a file or URI decoded at real-time pace (as a live track
//! arrives), captioned on its own thread, its events published into the room's hub.
//!
//! Threads: GStreamer's streaming thread only fills the bounded media channel; this source's
//! named thread owns the captioner and does all inference, then publishes into the hub (finals
//! are written to the room log before any client sees them). Stopping closes the media pipeline;
//! the captioner then flushes its open segment as a final, so a stopped room loses nothing that
//! was heard.
//!
//! Start-up: a track's models load on a thread of their own (0.3 s to a few seconds, longer when
//! several participants join at once on a busy machine) while the worker moves the audio that
//! already arrives off the live queue into a backlog (up to 30 s). Once loaded, the backlog is
//! captioned faster than real time, so a participant's first words are late by the load time,
//! never lost.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, bounded, never, select};
use serde::Serialize;

use crate::captions::CaptionEvent;
use crate::config::SourceConfig;
use crate::diarize::DiarizeSettings;
use crate::engine::Engine;
use crate::hub::Hub;
use crate::media::{AudioSource, DecodeSettings, MediaEvent};
use crate::protocol::GapReason;
use crate::stream::{Captioner, StreamSettings};

use super::room::RoomRenames;

/// Lifecycle of a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackState {
    Starting,
    Running,
    Finished,
    Stopped,
    Failed,
}

/// Live figures of one track, for the operator API and metrics.
#[derive(Debug, Clone, Serialize)]
pub struct TrackStats {
    pub state: TrackState,
    pub error: Option<String>,
    pub partials: u64,
    pub finals: u64,
    /// Latency of the last final: emission time minus the end of its speech, seconds.
    pub last_final_latency_s: Option<f64>,
    /// Audio captioned, seconds.
    pub audio_s: f64,
    /// Recognition time spent, seconds.
    pub asr_s: f64,
    /// Times the input was played from the start (looping sources).
    pub plays: u64,
    /// Audio lost (gaps), seconds.
    pub gaps_s: f64,
    /// Whether a caption of this track was emitted in the last few seconds.
    pub speaking: bool,
    /// Whether the track is diarized.
    pub diarized: bool,
    /// Speaker-embedding compute time (diarization thread), seconds.
    pub diarize_s: f64,
    /// Time finals and speaker-change checks waited for the diarization thread, seconds.
    pub diarize_wait_s: f64,
    /// Speaker labels given so far.
    pub speakers: Vec<String>,
    /// Time the track's models took to load, seconds (`None` while they load).
    pub model_load_s: Option<f64>,
    /// Audio that arrived while they loaded, kept and captioned once they were ready, seconds.
    pub startup_backlog_s: f64,
    #[serde(skip)]
    last_event: Option<Instant>,
}

/// How often a live source with no incoming audio is checked.
const LIVE_IDLE_CHECK: std::time::Duration = std::time::Duration::from_millis(200);
/// Overdue live audio (samples) after which the open segment is closed: longer than the
/// endpoint silence, so a sender that stops mid-sentence still gets its final about as late as
/// one that keeps sending silence.
const LIVE_IDLE_SAMPLES: u64 = 16_000 * 3 / 4;

/// Live audio kept while a track's models load, at most (samples; 30 s). Loading takes from a
/// few tenths of a second to a few seconds (more when several tracks start at once on a busy
/// machine), and a live input's own queue holds only ~1.3 s before it drops the oldest audio.
/// Past this bound the oldest kept audio goes, reported as lost.
const STARTUP_BACKLOG_SAMPLES: u64 = 16_000 * 30;

/// A caption within this many seconds marks its track as speaking.
const SPEAKING_WINDOW_S: f64 = 3.0;

impl Default for TrackStats {
    fn default() -> Self {
        Self {
            state: TrackState::Starting,
            error: None,
            partials: 0,
            finals: 0,
            last_final_latency_s: None,
            audio_s: 0.0,
            asr_s: 0.0,
            diarized: false,
            diarize_s: 0.0,
            diarize_wait_s: 0.0,
            speakers: Vec::new(),
            model_load_s: None,
            startup_backlog_s: 0.0,
            plays: 0,
            gaps_s: 0.0,
            speaking: false,
            last_event: None,
        }
    }
}

impl TrackStats {
    /// A copy with `speaking` computed now.
    pub fn snapshot(&self) -> TrackStats {
        let mut s = self.clone();
        s.speaking = self
            .last_event
            .is_some_and(|t| t.elapsed().as_secs_f64() < SPEAKING_WINDOW_S);
        s
    }
}

/// A running source.
pub struct SourceHandle {
    pub spec: SourceConfig,
    stats: Arc<Mutex<TrackStats>>,
    stop: Sender<()>,
    thread: Option<JoinHandle<()>>,
}

impl SourceHandle {
    /// Starts captioning `spec` into `hub`.
    pub fn start(
        spec: SourceConfig,
        engine: Engine,
        settings: StreamSettings,
        diarize: Option<DiarizeSettings>,
        renames: RoomRenames,
        hub: Hub,
    ) -> std::io::Result<Self> {
        Self::spawn(spec, engine, settings, diarize, renames, hub, None)
    }

    /// Starts captioning a participant of an SFU room: its audio arrives on `feed`, one
    /// [`AudioSource`] per publication (on the room timeline); the track lives until stopped or
    /// `feed` closes.
    pub fn start_fed(
        spec: SourceConfig,
        engine: Engine,
        settings: StreamSettings,
        diarize: Option<DiarizeSettings>,
        renames: RoomRenames,
        hub: Hub,
        feed: Receiver<AudioSource>,
    ) -> std::io::Result<Self> {
        Self::spawn(spec, engine, settings, diarize, renames, hub, Some(feed))
    }

    fn spawn(
        spec: SourceConfig,
        engine: Engine,
        settings: StreamSettings,
        diarize: Option<DiarizeSettings>,
        renames: RoomRenames,
        hub: Hub,
        feed: Option<Receiver<AudioSource>>,
    ) -> std::io::Result<Self> {
        let stats = Arc::new(Mutex::new(TrackStats::default()));
        let (stop, stop_rx) = bounded::<()>(1);
        let thread = {
            let (spec, stats) = (spec.clone(), stats.clone());
            std::thread::Builder::new()
                .name(format!("track-{}", spec.track))
                .spawn(move || {
                    run(
                        spec, engine, settings, diarize, renames, hub, stats, stop_rx, feed,
                    )
                })?
        };
        Ok(Self {
            spec,
            stats,
            stop,
            thread: Some(thread),
        })
    }

    /// Figures now.
    pub fn stats(&self) -> TrackStats {
        self.stats.lock().map(|s| s.snapshot()).unwrap_or_default()
    }

    /// Asks the source to stop (returns at once).
    pub fn request_stop(&self) {
        let _ = self.stop.try_send(());
    }

    /// Stops the source and waits until its last final is published.
    pub fn stop_and_join(&mut self) {
        self.request_stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for SourceHandle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

fn set_state(stats: &Mutex<TrackStats>, state: TrackState, error: Option<String>) {
    if let Ok(mut s) = stats.lock() {
        s.state = state;
        if error.is_some() {
            s.error = error;
        }
    }
}

/// The worker's next step within a publication.
enum Next {
    Event(Result<MediaEvent, ()>),
    Stop,
    Idle,
}

/// The wait for a track's models. A live track's audio starts flowing when it is published, not
/// when its captioner is ready: meanwhile its events are moved off the live queue (which would
/// drop them) into a backlog, captioned first once the models are ready, faster than real time.
#[derive(Default)]
struct Startup {
    /// The first publication, when it arrived during the wait.
    source: Option<AudioSource>,
    backlog: VecDeque<MediaEvent>,
    kept: u64,
    /// How long the models took to load, seconds.
    load_s: f64,
    /// Room-timeline samples dropped past the bound, from the first to the last.
    lost: Option<(u64, u64)>,
    stop_requested: bool,
}

impl Startup {
    /// Waits for `made`, keeping the first publication from `feed` and its audio; notes a stop.
    fn wait(
        &mut self,
        made: &Receiver<Result<Captioner, String>>,
        feed: Option<&Receiver<AudioSource>>,
        stop: &Receiver<()>,
        track: &str,
    ) -> Result<Captioner, String> {
        let started = Instant::now();
        let mut feed_open = feed.is_some();
        let mut audio_open = true;
        loop {
            let feed_rx = match feed {
                Some(feed) if feed_open && self.source.is_none() => feed.clone(),
                _ => never(),
            };
            let audio = match &self.source {
                Some(source) if audio_open => source.receiver().clone(),
                _ => never(),
            };
            let stop_rx = if self.stop_requested {
                never()
            } else {
                stop.clone()
            };
            select! {
                recv(made) -> m => {
                    self.load_s = started.elapsed().as_secs_f64();
                    let made = m.unwrap_or_else(|_| Err("the model loading thread ended".into()));
                    if made.is_ok() {
                        self.report(track, started);
                    }
                    return made;
                }
                recv(feed_rx) -> s => match s {
                    Ok(source) => self.source = Some(source),
                    Err(_) => feed_open = false,
                },
                recv(audio) -> event => match event {
                    Ok(event) => self.keep(event, track),
                    Err(_) => audio_open = false,
                },
                recv(stop_rx) -> _ => self.stop_requested = true,
            }
        }
    }

    /// Keeps `event`; past [`STARTUP_BACKLOG_SAMPLES`], drops the oldest audio.
    fn keep(&mut self, event: MediaEvent, track: &str) {
        if let MediaEvent::Audio(chunk) = &event {
            self.kept += chunk.samples.len() as u64;
        }
        self.backlog.push_back(event);
        while self.kept > STARTUP_BACKLOG_SAMPLES {
            let Some(MediaEvent::Audio(oldest)) = self.backlog.pop_front() else {
                break;
            };
            if self.lost.is_none() {
                tracing::warn!(
                    track,
                    "models still loading after {} s of audio: dropping the oldest (reported as a gap)",
                    STARTUP_BACKLOG_SAMPLES / 16_000
                );
            }
            self.kept -= oldest.samples.len() as u64;
            let from = self.lost.map_or(oldest.first_sample, |(from, _)| from);
            self.lost = Some((from, oldest.end_sample()));
        }
    }

    fn report(&self, track: &str, started: Instant) {
        let waited_ms = started.elapsed().as_millis();
        if self.kept > 0 {
            tracing::info!(
                track,
                "models ready after {waited_ms} ms; captioning the {:.2} s of audio kept meanwhile",
                self.kept as f64 / 16_000.0
            );
        } else {
            tracing::debug!(track, "models ready after {waited_ms} ms");
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn run(
    spec: SourceConfig,
    engine: Engine,
    settings: StreamSettings,
    diarize: Option<DiarizeSettings>,
    renames: RoomRenames,
    hub: Hub,
    stats: Arc<Mutex<TrackStats>>,
    stop: Receiver<()>,
    feed: Option<Receiver<AudioSource>>,
) {
    let fed = feed.is_some();
    // fed tracks count samples on their room's timeline, across publications
    let mut fed_expected = 0u64;
    let origin: Arc<OnceLock<Instant>> = Arc::new(OnceLock::new());
    let clock = {
        let origin = origin.clone();
        Box::new(move || origin.get().map_or(0.0, |t| t.elapsed().as_secs_f64()))
    };
    let speaker = spec.name.clone().or_else(|| spec.participant.clone());
    // The models load on their own thread while this one keeps the track's first audio.
    let loading = {
        let (engine, diarize, track, speaker) = (
            engine.clone(),
            diarize.clone(),
            spec.track.clone(),
            speaker.clone(),
        );
        let (tx, rx) = bounded(1);
        std::thread::Builder::new()
            .name(format!("load-{}", spec.track))
            .spawn(move || {
                let made = match &diarize {
                    Some(d) => engine.diarized_captioner(settings, d, &track, speaker, clock),
                    None => engine.captioner(settings, &track, clock),
                };
                let _ = tx.send(made.map_err(|e| e.to_string()));
            })
            .map(|_| rx)
    };
    let mut startup = Startup::default();
    let made = match loading {
        Ok(rx) => startup.wait(&rx, feed.as_ref(), &stop, &spec.track),
        Err(e) => Err(format!("cannot start the model loading thread: {e}")),
    };
    let mut captioner = match made {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(track = %spec.track, "cannot start the captioner: {e}");
            set_state(&stats, TrackState::Failed, Some(e));
            return;
        }
    };
    // segment ids restart with each captioner: prefix them with this run's start time so that
    // ids stay unique in the room's log across service restarts
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let publish = |out: &mut Vec<CaptionEvent>, stats: &Mutex<TrackStats>| {
        for mut ev in out.drain(..) {
            ev.segment_id = format!("{run_id:x}-{}", ev.segment_id);
            if ev.speaker.is_none() {
                ev.speaker = speaker.clone();
            }
            if let Some(r) = renames
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&spec.track)
            {
                r.apply(&mut ev);
            }
            if let Ok(mut s) = stats.lock() {
                s.last_event = Some(Instant::now());
                if ev.is_final() {
                    s.finals += 1;
                    s.last_final_latency_s = Some(ev.emitted_at - ev.end);
                } else {
                    s.partials += 1;
                }
            }
            if let Err(e) = hub.publish(ev) {
                // the hub refuses to show what it could not make durable
                tracing::error!(track = %spec.track, "caption not published: {e}");
            }
        }
    };
    let mut out = Vec::new();
    let mut stopped = false;
    let mut failed: Option<String> = None;
    if let Ok(mut s) = stats.lock() {
        s.model_load_s = Some(startup.load_s);
        s.startup_backlog_s = startup.kept as f64 / 16_000.0;
    }
    if let Some((from, to)) = startup.lost {
        let (from, to) = (from as f64 / 16_000.0, to as f64 / 16_000.0);
        // counted in the figures with the first audio captioned, like any start offset
        let _ = hub.publish_gap(&spec.track, from, to, GapReason::AudioLost);
    }
    let mut pending = std::mem::take(&mut startup.backlog);
    let mut first_source = startup.source.take();
    while !stopped {
        let source = if let Some(source) = first_source.take() {
            source
        } else if startup.stop_requested {
            stopped = true;
            break;
        } else if let Some(feed) = &feed {
            // the participant's next publication (rejoin, reconnection), or the end
            select! {
                recv(feed) -> s => match s {
                    Ok(s) => s,
                    Err(_) => break,
                },
                recv(stop) -> _ => {
                    stopped = true;
                    break;
                }
            }
        } else {
            match AudioSource::open(
                &spec.uri,
                &DecodeSettings {
                    realtime: true,
                    ..Default::default()
                },
            ) {
                Ok(s) => s,
                Err(e) => {
                    failed = Some(e.to_string());
                    break;
                }
            }
        };
        let _ = origin.set(source.started_at().unwrap_or_else(Instant::now));
        set_state(&stats, TrackState::Running, None);
        if let Ok(mut s) = stats.lock() {
            s.plays += 1;
        }
        let base = if fed { 0.0 } else { captioner.position_s() };
        let rx = source.receiver().clone();
        let mut expected = if fed { fed_expected } else { 0 };
        let mut first_chunk = true;
        loop {
            let next = match pending.pop_front() {
                Some(event) => Next::Event(Ok(event)),
                // stopped while the models loaded: what was heard meanwhile is captioned first
                None if startup.stop_requested => Next::Stop,
                None => select! {
                    recv(rx) -> msg => Next::Event(msg.map_err(|_| ())),
                    recv(stop) -> _ => Next::Stop,
                    default(LIVE_IDLE_CHECK) => Next::Idle,
                },
            };
            match next {
                Next::Event(msg) => match msg {
                    Ok(MediaEvent::Audio(chunk)) => {
                        if chunk.first_sample > expected {
                            let missing = chunk.first_sample - expected;
                            let from = base + expected as f64 / 16_000.0;
                            // a live sender that starts after the room opened, or a participant
                            // publishing again, lost nothing
                            if !((source.is_live() && expected == 0) || (fed && first_chunk)) {
                                let _ = hub.publish_gap(
                                    &spec.track,
                                    from,
                                    from + missing as f64 / 16_000.0,
                                    GapReason::AudioLost,
                                );
                            }
                            if let Ok(mut s) = stats.lock() {
                                s.gaps_s += missing as f64 / 16_000.0;
                            }
                            if let Err(e) = captioner.gap(missing, &mut out) {
                                tracing::warn!(track = %spec.track, "recognition failed: {e}");
                            }
                        }
                        first_chunk = false;
                        let skip = expected.saturating_sub(chunk.first_sample) as usize;
                        if skip < chunk.samples.len()
                            && let Err(e) = captioner.push(
                                &chunk.samples[skip..],
                                !(rx.is_empty() && pending.is_empty()),
                                &mut out,
                            )
                        {
                            tracing::warn!(track = %spec.track, "recognition failed: {e}");
                        }
                        expected = expected.max(chunk.end_sample());
                        publish(&mut out, &stats);
                        if let Ok(mut s) = stats.lock() {
                            s.audio_s = captioner.stats().audio_s;
                            s.asr_s = captioner.stats().asr_s;
                            s.diarized = diarize.is_some();
                            s.diarize_s = captioner.stats().diarize_s;
                            s.diarize_wait_s = captioner.stats().diarize_wait_s;
                            if s.speakers.len() != captioner.speaker_count() {
                                s.speakers = captioner.speaker_labels();
                            }
                        }
                    }
                    Ok(MediaEvent::Eos) | Err(_) => break,
                    Ok(MediaEvent::Error(e)) => {
                        failed = Some(e.to_string());
                        break;
                    }
                },
                Next::Stop => {
                    stopped = true;
                    break;
                }
                Next::Idle => {
                    // a live sender that stopped (muted, left) sends nothing, not even silence:
                    // once its audio is clearly overdue, close what was heard so the last
                    // sentence gets its final. Not published as lost audio: nothing was sent.
                    if let Some(edge) = source.live_edge()
                        && edge > expected + LIVE_IDLE_SAMPLES
                    {
                        if let Err(e) = captioner.gap(edge - expected, &mut out) {
                            tracing::warn!(track = %spec.track, "recognition failed: {e}");
                        }
                        expected = edge;
                        publish(&mut out, &stats);
                    }
                }
            }
        }
        if fed {
            // the publication ended: close what was heard (its final now, not at the next one),
            // also when it ended right after its last audio (a mute: nothing is overdue yet)
            let edge = source.live_edge().unwrap_or(expected).max(expected);
            if let Err(e) = captioner.gap(edge - expected, &mut out) {
                tracing::warn!(track = %spec.track, "recognition failed: {e}");
            }
            expected = edge;
            publish(&mut out, &stats);
            fed_expected = expected;
        }
        drop(source);
        if failed.is_some() || !(spec.looped || fed) {
            break;
        }
    }
    // flush: the open segment becomes a final
    if let Err(e) = captioner.finish(&mut out) {
        tracing::warn!(track = %spec.track, "recognition failed at the end: {e}");
    }
    publish(&mut out, &stats);
    match failed {
        Some(e) => {
            tracing::error!(track = %spec.track, "source failed: {e}");
            set_state(&stats, TrackState::Failed, Some(e));
        }
        None if stopped => set_state(&stats, TrackState::Stopped, None),
        None => set_state(&stats, TrackState::Finished, None),
    }
}

#[cfg(test)]
impl SourceHandle {
    /// Waits until the worker ends on its own (its feed closed), without asking it to stop.
    fn join(&mut self) {
        if let Some(t) = self.thread.take() {
            t.join().expect("the track worker panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use gstreamer as gst;
    use gstreamer::prelude::*;
    use gstreamer_app as gst_app;

    use super::*;
    use crate::hub::{HubSettings, LOG_FILE_NAME};
    use crate::media::{DEFAULT_QUEUE_CHUNKS, SAMPLE_RATE, read_wav_mono16k, webrtc_audio_branch};
    use crate::stream::LanguageSetting;

    fn chunk(first_sample: u64, samples: usize) -> MediaEvent {
        MediaEvent::Audio(crate::media::AudioChunk {
            samples: vec![0.0; samples],
            first_sample,
        })
    }

    #[test]
    fn the_startup_backlog_is_bounded_and_drops_the_oldest_audio() {
        let second = u64::from(SAMPLE_RATE);
        let mut startup = Startup::default();
        for i in 0..30 {
            startup.keep(chunk(i * second, SAMPLE_RATE as usize), "t");
        }
        assert_eq!(startup.lost, None);
        assert_eq!(startup.backlog.len(), 30);
        for i in 30..33 {
            startup.keep(chunk(i * second, SAMPLE_RATE as usize), "t");
        }
        startup.keep(MediaEvent::Eos, "t");
        assert_eq!(startup.kept, STARTUP_BACKLOG_SAMPLES);
        assert_eq!(startup.lost, Some((0, 3 * second)));
        let firsts: Vec<Option<u64>> = startup
            .backlog
            .iter()
            .map(|e| match e {
                MediaEvent::Audio(c) => Some(c.first_sample),
                _ => None,
            })
            .collect();
        assert_eq!(firsts.len(), 31);
        assert_eq!(firsts[0], Some(3 * second));
        assert_eq!(firsts[29], Some(32 * second));
        assert_eq!(firsts[30], None, "the end of the publication is kept");
    }

    /// A publication whose whole utterance reaches the track before its models have loaded
    /// (a participant who spoke before the sidecar's worker was ready, a jitter buffer releasing
    /// its backlog): the live queue alone holds 1.3 s and would keep only the utterance's end.
    #[test]
    fn audio_that_arrives_while_the_models_load_is_captioned() {
        let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/dev");
        let audio = read_wav_mono16k(&shared.join("utterances/synth/en_01.wav")).unwrap();
        assert!(audio.len() as u64 > 4 * u64::from(SAMPLE_RATE));
        let engine = Engine::prepare_default("whisper-base")
            .expect("models and ONNX Runtime are set up (make setup)");

        // the real branch of a remote track, fed with RTP/Opus as fast as it is encoded
        crate::media::init().unwrap();
        let pipeline = gst::parse::launch(&format!(
            "appsrc name=src format=time caps=audio/x-raw,format=F32LE,rate={SAMPLE_RATE},\
             channels=1,layout=interleaved ! audioconvert ! audioresample ! opusenc \
             ! rtpopuspay name=pay pt=96"
        ))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let (branch, sink, decoder) = webrtc_audio_branch().unwrap();
        pipeline.add(&branch).unwrap();
        pipeline
            .by_name("pay")
            .unwrap()
            .link(&branch)
            .expect("payloader -> branch");
        let (source, tap) = AudioSource::tap(
            "test#audio0",
            &pipeline,
            &sink,
            &decoder,
            Instant::now(),
            Duration::from_millis(100),
            &DecodeSettings {
                realtime: false,
                queue_chunks: DEFAULT_QUEUE_CHUNKS,
            },
        )
        .unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let hub = Hub::open("startup", &HubSettings::with_data_dir(dir.path())).unwrap();
        let (feed, feed_rx) = bounded(1);
        feed.send(source).unwrap();
        let mut handle = SourceHandle::start_fed(
            SourceConfig {
                track: "a".into(),
                uri: "sfu:a".into(),
                participant: Some("a".into()),
                name: None,
                looped: false,
                diarize: Some(false),
            },
            engine,
            StreamSettings {
                language: LanguageSetting::Fixed("en".into()),
                ..StreamSettings::default()
            },
            None,
            RoomRenames::default(),
            hub.clone(),
            feed_rx,
        )
        .unwrap();

        let src = pipeline
            .by_name("src")
            .unwrap()
            .downcast::<gst_app::AppSrc>()
            .unwrap();
        let per_buffer = SAMPLE_RATE as usize / 50;
        for (i, piece) in audio.chunks(per_buffer).enumerate() {
            let bytes: Vec<u8> = piece.iter().flat_map(|s| s.to_le_bytes()).collect();
            let mut buffer = gst::Buffer::from_mut_slice(bytes);
            buffer
                .get_mut()
                .unwrap()
                .set_pts(gst::ClockTime::from_mseconds(20 * i as u64));
            src.push_buffer(buffer).unwrap();
        }
        src.end_of_stream().unwrap();
        // every chunk has been handed to the track once the pipeline's end reaches the bus
        let bus = pipeline.bus().unwrap();
        match bus.timed_pop_filtered(
            gst::ClockTime::from_seconds(30),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        ) {
            Some(m) if m.type_() == gst::MessageType::Eos => {}
            other => panic!("the sender pipeline did not end: {other:?}"),
        }
        tap.end();
        drop(feed);
        handle.join();
        pipeline.set_state(gst::State::Null).unwrap();

        let stats = handle.stats();
        assert_eq!(stats.state, TrackState::Finished, "{stats:?}");
        assert!(stats.model_load_s.is_some_and(|s| s > 0.0), "{stats:?}");
        let log = std::fs::read_to_string(dir.path().join("startup").join(LOG_FILE_NAME)).unwrap();
        let mut finals = String::new();
        for line in log.lines() {
            let m: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_ne!(m["type"], "gap", "nothing was lost: {m}");
            if m["type"] == "caption" && m["event"]["type"] == "final" {
                finals.push_str(m["event"]["text"].as_str().unwrap());
                finals.push(' ');
            }
        }
        let finals = finals.to_lowercase();
        // the utterance's beginning, end, and the middle the live queue would have dropped
        for words in ["new budget proposal", "approved", "finance committee"] {
            assert!(
                finals.contains(words),
                "`{words}` missing from the finals: {finals}"
            );
        }
    }
}
