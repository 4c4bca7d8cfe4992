//! Captioning one audio input end to end: GStreamer decode → bounded channel → inference worker
//! thread → caption events to the caller.
//!
//! Threads and queues: the appsink callback (GStreamer streaming thread) only copies samples into
//! the media channel (bounded; file inputs block the decoder when it is full, so nothing is
//! lost). A named worker thread owns the captioner and does all inference; it sends events on a
//! bounded channel (blocking: finals are never dropped) to the caller's thread, which renders
//! them. When the worker falls behind a real-time input, the captioner skips partials.

use std::time::Instant;

use crossbeam_channel::{Receiver, bounded};

use crate::captions::CaptionEvent;
use crate::diarize::{DiarizeSettings, Diarizer};
use crate::engine::{Engine, EngineError};
use crate::media::{AudioSource, DecodeSettings, MediaError, MediaEvent};
use crate::stream::{CaptionError, CaptionerStats, StreamSettings};

/// Capacity of the worker → caller event channel.
pub const EVENT_QUEUE: usize = 1024;

/// Errors of a captioning run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Media(#[from] MediaError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Caption(#[from] CaptionError),
    #[error("the captioning worker stopped unexpectedly")]
    WorkerLost,
}

/// Figures of a finished run.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    /// Audio decoded, seconds.
    pub audio_s: f64,
    /// Wall-clock time from the first sample to the last event, seconds.
    pub wall_s: f64,
    /// Process CPU time during the run (user + system), seconds.
    pub cpu_s: f64,
    /// Counters of the captioner.
    pub stats: CaptionerStats,
    /// Gaps (lost audio) seen in the input, seconds.
    pub gaps_s: f64,
    /// With diarization: who spoke when (see [`crate::stream::Captioner::take_turns`]).
    pub turns: Vec<crate::diarize::Turn>,
}

/// What an event's `emitted_at` measures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EventClock {
    /// Wall-clock time since the first sample entered: decode time counts, and partials are
    /// skipped while the captioner is behind its input (as live).
    #[default]
    Wall,
    /// The audio consumed when the event was emitted, no partial skipped: the latency of the
    /// streaming policy alone, identical from run to run whatever the load (see
    /// [`crate::stream::Captioner::with_audio_clock`]; with diarization, the provisional
    /// speaker of a partial still depends on the diarization thread's progress). Meant for
    /// input decoded as fast as possible.
    Audio,
}

/// Captions `input` (a path or URI) on track `track`, calling `on_event` for each event in
/// emission order. Returns when the input ends.
pub fn caption_input(
    input: &str,
    decode: &DecodeSettings,
    engine: &Engine,
    settings: &StreamSettings,
    track: &str,
    on_event: impl FnMut(&CaptionEvent),
) -> Result<RunReport, RunError> {
    caption_input_diarized(input, decode, engine, settings, None, track, on_event)
}

/// Stops a run early from another thread (Ctrl-C): the input ends where it is, the open
/// segment becomes a final, and the run returns normally with everything captioned so far.
#[derive(Clone, Default)]
pub struct Interrupt {
    state: std::sync::Arc<std::sync::Mutex<InterruptState>>,
}

#[derive(Default)]
struct InterruptState {
    requested: bool,
    source: Option<crate::media::SourceEnder>,
}

impl Interrupt {
    /// Asks the run to stop (at once if its input is open, else as soon as it opens).
    pub fn trigger(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.requested = true;
        if let Some(e) = &s.source {
            e.end();
        }
    }

    /// Whether [`Interrupt::trigger`] was called.
    pub fn requested(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .requested
    }

    fn attach(&self, ender: crate::media::SourceEnder) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.requested {
            ender.end();
        }
        s.source = Some(ender);
    }
}

/// [`caption_input`], with speaker diarization when `diarize` is given (the engine must have
/// its diarization model, see [`Engine::with_diarization`]).
pub fn caption_input_diarized(
    input: &str,
    decode: &DecodeSettings,
    engine: &Engine,
    settings: &StreamSettings,
    diarize: Option<&DiarizeSettings>,
    track: &str,
    on_event: impl FnMut(&CaptionEvent),
) -> Result<RunReport, RunError> {
    caption_input_interruptible(
        input,
        decode,
        engine,
        settings,
        diarize,
        track,
        &Interrupt::default(),
        EventClock::Wall,
        on_event,
    )
}

/// [`caption_input_diarized`] that `interrupt` can stop early.
#[allow(clippy::too_many_arguments)]
pub fn caption_input_interruptible(
    input: &str,
    decode: &DecodeSettings,
    engine: &Engine,
    settings: &StreamSettings,
    diarize: Option<&DiarizeSettings>,
    track: &str,
    interrupt: &Interrupt,
    event_clock: EventClock,
    mut on_event: impl FnMut(&CaptionEvent),
) -> Result<RunReport, RunError> {
    settings.validate().map_err(CaptionError::from)?;
    if let Some(d) = diarize {
        d.validate().map_err(CaptionError::from)?;
    }
    crate::media::init()?;
    // load models before the audio starts flowing, so loading is not counted as latency
    let whisper = engine.whisper()?;
    let vad = engine.vad()?;
    let cpu0 = cpu_seconds();
    let source = AudioSource::open(input, decode)?;
    interrupt.attach(source.ender());
    let origin = source.started_at().unwrap_or_else(Instant::now);
    let clock = Box::new(move || origin.elapsed().as_secs_f64());
    let mut captioner =
        crate::stream::Captioner::new(settings.clone(), track, whisper, vad, clock)?;
    if let Some(d) = diarize {
        let worker = Diarizer::start(track, d, engine.campplus()?).map_err(EngineError::from)?;
        captioner = captioner.with_diarizer(worker, d, None)?;
    }
    let audio_clock = event_clock == EventClock::Audio;
    if audio_clock {
        captioner = captioner.with_audio_clock();
    }
    let media_rx = source.receiver().clone();
    let (ev_tx, ev_rx) = bounded::<WorkerMsg>(EVENT_QUEUE);
    let worker = std::thread::Builder::new()
        .name(format!("asr-{track}"))
        .spawn(move || worker(captioner, media_rx, ev_tx, !audio_clock))
        .map_err(|_| RunError::WorkerLost)?;
    let mut result = Ok(());
    for msg in ev_rx.iter() {
        match msg {
            WorkerMsg::Event(ev) => on_event(&ev),
            WorkerMsg::Failed(e) => result = Err(e),
        }
    }
    let (stats, gaps_s, turns) = worker.join().map_err(|_| RunError::WorkerLost)?;
    drop(source);
    result?;
    Ok(RunReport {
        audio_s: stats.audio_s,
        wall_s: origin.elapsed().as_secs_f64(),
        cpu_s: cpu_seconds() - cpu0,
        stats,
        gaps_s,
        turns,
    })
}

enum WorkerMsg {
    Event(CaptionEvent),
    Failed(RunError),
}

/// Feeds the captioner; with `catch_up`, optional work is skipped while input is pending.
fn worker(
    mut captioner: crate::stream::Captioner,
    rx: Receiver<MediaEvent>,
    tx: crossbeam_channel::Sender<WorkerMsg>,
    catch_up: bool,
) -> (CaptionerStats, f64, Vec<crate::diarize::Turn>) {
    let mut out = Vec::new();
    let mut expected = 0u64;
    let mut gaps = 0u64;
    let send_all = |out: &mut Vec<CaptionEvent>| {
        for ev in out.drain(..) {
            // the caller only goes away when it stops listening: nothing left to deliver to
            let _ = tx.send(WorkerMsg::Event(ev));
        }
    };
    let fail = |e: RunError| {
        let _ = tx.send(WorkerMsg::Failed(e));
    };
    for msg in rx.iter() {
        match msg {
            MediaEvent::Audio(chunk) => {
                if chunk.first_sample > expected {
                    let missing = chunk.first_sample - expected;
                    gaps += missing;
                    if let Err(e) = captioner.gap(missing, &mut out) {
                        fail(e.into());
                    }
                    send_all(&mut out);
                }
                // overlapping timestamps: drop the samples already seen
                let skip = expected.saturating_sub(chunk.first_sample) as usize;
                if skip < chunk.samples.len() {
                    let busy = catch_up && !rx.is_empty();
                    if let Err(e) = captioner.push(&chunk.samples[skip..], busy, &mut out) {
                        fail(e.into());
                    }
                    send_all(&mut out);
                }
                expected = expected.max(chunk.end_sample());
            }
            MediaEvent::Eos => break,
            MediaEvent::Error(e) => {
                let _ = captioner.finish(&mut out);
                send_all(&mut out);
                fail(e.into());
                let turns = captioner.take_turns();
                return (captioner.stats().clone(), gaps as f64 / 16_000.0, turns);
            }
        }
    }
    if let Err(e) = captioner.finish(&mut out) {
        fail(e.into());
    }
    send_all(&mut out);
    let turns = captioner.take_turns();
    (captioner.stats().clone(), gaps as f64 / 16_000.0, turns)
}

/// CPU time (user + system) of this process so far, seconds.
pub fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// Peak resident memory of this process so far, bytes.
pub fn peak_rss_bytes() -> u64 {
    // SAFETY: as above.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return 0;
    }
    u.ru_maxrss as u64 * 1024
}
