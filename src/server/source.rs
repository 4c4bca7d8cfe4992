//! One captioned source of a room: a file or URI decoded at real-time pace (as a live track
//! arrives), captioned on its own thread, its events published into the room's hub.
//!
//! Threads: GStreamer's streaming thread only fills the bounded media channel; this source's
//! named thread owns the captioner and does all inference, then publishes into the hub (finals
//! are written to the room log before any client sees them). Stopping closes the media pipeline;
//! the captioner then flushes its open segment as a final, so a stopped room loses nothing that
//! was heard.

use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, bounded, select};
use serde::Serialize;

use crate::captions::CaptionEvent;
use crate::config::SourceConfig;
use crate::diarize::DiarizeSettings;
use crate::engine::Engine;
use crate::hub::Hub;
use crate::media::{AudioSource, DecodeSettings, MediaEvent};
use crate::protocol::GapReason;
use crate::stream::StreamSettings;

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
    #[serde(skip)]
    last_event: Option<Instant>,
}

/// How often a live source with no incoming audio is checked.
const LIVE_IDLE_CHECK: std::time::Duration = std::time::Duration::from_millis(200);
/// Overdue live audio (samples) after which the open segment is closed: longer than the
/// endpoint silence, so a sender that stops mid-sentence still gets its final about as late as
/// one that keeps sending silence.
const LIVE_IDLE_SAMPLES: u64 = 16_000 * 3 / 4;

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
    let made = match &diarize {
        Some(d) => engine.diarized_captioner(settings, d, &spec.track, speaker.clone(), clock),
        None => engine.captioner(settings, &spec.track, clock),
    };
    let mut captioner = match made {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(track = %spec.track, "cannot start the captioner: {e}");
            set_state(&stats, TrackState::Failed, Some(e.to_string()));
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
    while !stopped {
        let source = if let Some(feed) = &feed {
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
            select! {
                recv(rx) -> msg => match msg {
                    Ok(MediaEvent::Audio(chunk)) => {
                        if chunk.first_sample > expected {
                            let missing = chunk.first_sample - expected;
                            let from = base + expected as f64 / 16_000.0;
                            // a live sender that starts after the room opened, or a participant
                            // publishing again, lost nothing
                            if !((source.is_live() && expected == 0) || (fed && first_chunk)) {
                                let _ = hub.publish_gap(&spec.track, from, from + missing as f64 / 16_000.0, GapReason::AudioLost);
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
                            && let Err(e) = captioner.push(&chunk.samples[skip..], !rx.is_empty(), &mut out)
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
                recv(stop) -> _ => {
                    stopped = true;
                    break;
                }
                default(LIVE_IDLE_CHECK) => {
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
