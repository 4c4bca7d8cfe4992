//! The captioning loop of one track: VAD-gated segmentation, partials by local agreement, finals
//! at endpoints.
//!
//! Audio is consumed in fixed VAD frames of 32 ms whatever the size of the buffers pushed, and
//! every decision (segment start and end, forced cuts, partial times) is taken in audio time, so
//! the finals do not depend on how the audio was sliced. Partials and speculative final decodes
//! are *optional work*: the caller says when input is pending (`busy`) and the captioner then
//! skips them to catch up; finals are always decoded.
//!
//! Latency model (audio time → event):
//! * partial: `partial_interval_ms` cadence + one decode of the segment so far (≈ 0.1–0.4 s for
//!   whisper-base on one core), skipped while behind. A word still being spoken waits one more
//!   partial (the last word is shown once two hypotheses end with it). A hypothesis stuck at a
//!   sentence end while [`STUCK_VOICED_MS`] of speech goes on *trims* the partials at the pause
//!   after that sentence: its words stay shown and become the context, and later partials
//!   decode only the audio after it, so the next sentence shows at the next partial (finals
//!   still decode the whole segment); with `auto`, if the speech after it is heard in another
//!   language (one short probe), the segment gets a *joint* there instead: the part before is
//!   decoded and emitted as a final at once, in its own language, and the speech after the
//!   joint goes on under a new segment id, its partials decoding only the audio after the
//!   joint, in the language heard. A turn that follows another in a different language
//!   without an endpoint pause is then shown about a second after it starts, and is neither
//!   dropped nor translated into the previous turn's language; the previous turn's final comes
//!   at the joint (1-2 s after its end), not at the next endpoint, and no final mixes two
//!   languages under one `language`. When a partial's detection switches language, the words
//!   read longer than `revision_window_ms` ago stay shown (the partials are trimmed at the
//!   pause after them) and the next partial, at the same time, shows the speech after them in
//!   the new language: a switch rewrites no word already read, except those of a language
//!   fewer than `stable_agreement` partials heard (the detector's first guess);
//! * final: `endpoint_silence_ms` after the last voiced frame. The final's decode starts as soon
//!   as `speech_end_pad_ms` of silence is in, so it is usually ready when the endpoint is
//!   confirmed; when it goes on from the words on screen, the words it adds (the held-back last
//!   word, typically) are shown at once in a partial, `speech_end_pad_ms` plus one decode after
//!   the speech paused, instead of at the next partial after the pause or at the final;
//! * forced cut: at `max_segment_s`, at the quietest frame of the last 3 s; the rest's first
//!   partial is due at once;
//! * language cut (`language_change_cut`, `auto` only): a joint cuts the segment instead, and
//!   each partial is followed by a probe of the language of the segment's latest 2 s (one
//!   short encoder pass, run before the next frame so that the partial is not held back by
//!   it); two probes in a row hearing another language cut the segment at the pause where it
//!   started, so the final of the turn before comes 1-3 s after its end.
//!
//! With a diarizer ([`Captioner::with_diarizer`]) every voiced frame also goes to the track's
//! diarization worker (its own thread, see [`crate::diarize`]). Partials carry the provisional
//! speaker of the latest embedding window without waiting; a final waits for the worker to have
//! seen every frame so far, labels each word with its speaker and is split into one final per
//! speaker run (the first run keeps the segment id, later runs get new ids), so a final never
//! mixes speakers and its label is never revised.

use std::collections::{HashMap, VecDeque};

use crate::asr::{
    AsrError, DecodeOptions, Decoded, Guard, LOGPROB_THRESHOLD, Language, MAX_CONTEXT_TOKENS,
    TIMESTAMP_STEP_S, Whisper, choose_language,
};
use crate::captions::{CaptionEvent, EventKind, Word};
use crate::diarize::track::speaker_runs;
use crate::diarize::{
    DEFAULT_JOIN_GAP_S, DiarizeError, DiarizeSettings, Diarizer, SpeakerNames, Turn,
};
use crate::onnx::OnnxError;
use crate::vad::{FRAME_SAMPLES, SileroVad};

use super::agreement::Agreement;
use super::settings::{InvalidSetting, LanguageSetting, StreamSettings};
use super::timing::{TimedWord, spread_words, voiced_spans};

const SAMPLE_RATE: f64 = 16_000.0;
const FRAME_S: f64 = FRAME_SAMPLES as f64 / SAMPLE_RATE;
/// Window searched for the quietest frame at a forced cut, seconds before the cut.
const CUT_SEARCH_S: f64 = 3.0;
/// Token budget of a partial decode per second of audio (speech runs at 3-5 tokens/s; the
/// decoder's own budget is wider for finals).
const PARTIAL_TOKENS_PER_SECOND: f32 = 6.0;
/// A partial hypothesis stops when its last this-many tokens already occurred in it: on audio
/// cut mid-speech Whisper tends to start the utterance over.
const PARTIAL_REPEAT_NGRAM: usize = 4;
/// Voiced audio, ms, that may go by while the partial hypothesis stays at the end of a sentence
/// before the partials are trimmed there (or, when a trim cannot be placed, the decoder is asked
/// to go on past it): on audio cut mid-speech Whisper tends to stop at a sentence end when
/// another sentence or voice follows without a pause.
const STUCK_VOICED_MS: u64 = 800;
/// A joint falls in the longest pause found from this long before the partial hypothesis last
/// changed to [`JOINT_GUARD_S`] before the current frame, seconds.
const JOINT_SEARCH_S: f64 = 1.5;
const JOINT_GUARD_S: f64 = 0.3;
/// Shortest part of a segment before a joint, seconds.
const MIN_PART_S: f64 = 1.0;
/// At a partial language switch, the pause the new language is decoded from is looked for from
/// this long before the end of the last word kept (word times are estimates), seconds.
const SWITCH_TRIM_BEFORE_S: f64 = 0.15;
/// Words of a partial hypothesis's beginning that, said again later in it, mark a restart.
const RESTART_WORDS: usize = 3;
/// Shortest half when a looping final window is split, seconds.
const MIN_SPLIT_S: f64 = 1.5;
/// Deepest recursive split of a looping final window.
const MAX_SPLIT_DEPTH: u32 = 3;
/// The cut never falls in the last this-many seconds (the current word).
const CUT_GUARD_S: f64 = 0.3;
/// Speaker changes are looked for in the embedding windows that end at least this long before
/// the current frame: the diarization thread is normally done with them, so the captioner
/// practically never waits, and the decision does not depend on the thread's progress.
const CHANGE_HORIZON_MS: u32 = 128;
/// A speaker-change cut is placed at the quietest frame within this many seconds of the
/// estimated change.
const CHANGE_SEARCH_S: f64 = 0.4;

/// Latest audio of a segment whose language is probed (`auto`), seconds: long enough for a
/// usable detection, short enough to lie mostly in one speaker's turn.
const LANGUAGE_PROBE_S: f64 = 2.0;
/// A segment is probed once this much audio precedes the probed tail, seconds (the part cut
/// off must hold speech of its own).
const LANGUAGE_PROBE_LEFT_S: f64 = 1.0;
/// Probability of another language that a tail probe must find, twice in a row, to cut the
/// segment ([`crate::asr::ENGLISH_SWITCH_CONFIDENCE`] for English: the probe is short audio).
const LANGUAGE_CUT_CONFIDENCE: f32 = 0.7;
/// A language cut falls in the pause found between this long before the probed tail and
/// [`LANGUAGE_CUT_GUARD_S`] before the current frame, seconds.
const LANGUAGE_CUT_SEARCH_S: f64 = 1.5;
const LANGUAGE_CUT_GUARD_S: f64 = 0.8;

/// Errors of the captioning loop.
#[derive(Debug, thiserror::Error)]
pub enum CaptionError {
    #[error(transparent)]
    Asr(#[from] AsrError),
    #[error("voice activity detection failed: {0}")]
    Vad(#[from] OnnxError),
    #[error(transparent)]
    Settings(#[from] InvalidSetting),
    #[error(transparent)]
    Diarize(#[from] DiarizeError),
}

/// Counters of one captioner, for benchmarks and metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CaptionerStats {
    /// Audio consumed, seconds.
    pub audio_s: f64,
    /// Seconds spent in the recognizer (all decodes).
    pub asr_s: f64,
    /// Seconds spent in the VAD.
    pub vad_s: f64,
    pub partials: u64,
    pub finals: u64,
    /// Partial times passed over while catching up with pending input.
    pub skipped_partials: u64,
    /// Finals whose decode was done speculatively before the endpoint was confirmed.
    pub speculative_hits: u64,
    /// Partials showing the words a speculative final decode heard at the start of a pause.
    pub speculative_partials: u64,
    /// Speculative decodes thrown away because speech resumed.
    pub speculative_misses: u64,
    /// Decodes cut or dropped by a hallucination guard.
    pub guarded: u64,
    /// Language probes of a segment's latest audio (`auto`), and the cuts they made.
    pub language_probes: u64,
    pub language_cuts: u64,
    /// Joints made where a partial hypothesis stayed at a sentence end while speech went on.
    pub joints: u64,
    /// Trims: partials moved past a sentence their hypothesis was stuck at.
    pub trims: u64,
    /// Seconds spent in the speaker-embedding model (on the diarization thread).
    pub diarize_s: f64,
    /// Speaker-embedding windows computed.
    pub diarize_windows: u64,
    /// Seconds the finals waited for the diarization thread.
    pub diarize_wait_s: f64,
}

/// Audio a final decodes: samples and VAD probabilities from absolute sample `start`, the end of
/// its speech, and the language its partials settled on.
struct FinalWindow<'a> {
    audio: &'a [f32],
    probs: &'a [f32],
    start: u64,
    last_voiced_end: u64,
    language: Option<&'a String>,
}

struct Segment {
    /// Absolute sample of `audio[0]`.
    start: u64,
    audio: Vec<f32>,
    /// VAD probability per frame of `audio`.
    probs: Vec<f32>,
    /// Absolute sample just after the last voiced frame.
    last_voiced_end: u64,
    voiced_frames: u32,
    silence_frames: u32,
    next_partial_at: u64,
    id: Option<String>,
    revision: u32,
    last_partial_text: String,
    hypothesis: Hypothesis,
    agreement: Agreement,
    /// Language the segment's partials decode in (`auto`: detected by each partial, kept
    /// unless another is confidently detected).
    language: Option<String>,
    /// Partial decodes in a row that heard `language`.
    language_run: u32,
    /// A final decode made ahead of the endpoint: (absolute end sample, result).
    speculative: Option<(u64, Decoded)>,
    /// Another language the latest tail probe confidently heard (`auto` only): a second
    /// probe agreeing with it cuts the segment.
    probe: Option<String>,
    /// Frame where the part of the segment that partials decode starts (0 until a joint; the
    /// audio before it has had its final).
    part_start: usize,
    /// Frame where the audio partials decode starts (`part_start` until a trim moves it past
    /// a sentence the hypothesis was stuck at; the final still decodes the whole part).
    view_start: usize,
    /// The current part's words shown before `view_start`, kept as they were shown.
    view_words: Vec<TimedWord>,
    /// Their text tokens: the decoding context of the partials after the trim.
    view_tokens: Vec<u32>,
    /// The words after `view_start` the latest partial showed.
    shown: Vec<TimedWord>,
}

/// The latest partial hypothesis of a segment, as the partial policy needs it.
#[derive(Default)]
struct Hypothesis {
    /// Its words, before the last word was held back.
    words: Vec<String>,
    /// Its text tokens.
    text_tokens: Vec<u32>,
    /// Its average token log-probability.
    logprob: f32,
    /// Voiced frames of the segment when the hypothesis last changed.
    voiced_at_change: u32,
    /// Frames of the segment when the hypothesis last changed.
    frames_at_change: usize,
    /// Text tokens later hypotheses must reach: past where the decoder stopped while speech
    /// went on.
    min_text_tokens: usize,
}

impl Segment {
    /// A segment of `audio` (VAD `probs`) from absolute sample `start`, with one voiced frame,
    /// nothing decoded yet and its first partial due at absolute sample `next_partial_at`.
    fn open(
        start: u64,
        audio: Vec<f32>,
        probs: Vec<f32>,
        last_voiced_end: u64,
        next_partial_at: u64,
        stable_agreement: u32,
    ) -> Self {
        Self {
            start,
            audio,
            probs,
            last_voiced_end,
            voiced_frames: 1,
            silence_frames: 0,
            next_partial_at,
            id: None,
            revision: 0,
            last_partial_text: String::new(),
            hypothesis: Hypothesis::default(),
            agreement: Agreement::new(stable_agreement as usize),
            language: None,
            language_run: 0,
            speculative: None,
            probe: None,
            part_start: 0,
            view_start: 0,
            view_words: Vec::new(),
            view_tokens: Vec::new(),
            shown: Vec::new(),
        }
    }

    fn end(&self) -> u64 {
        self.start + self.audio.len() as u64
    }

    /// Whether the latest partial hypothesis has stayed, confidently, at the end of a sentence
    /// while [`STUCK_VOICED_MS`] of speech went on (an unsure one is not stuck, it is lost).
    fn stuck_at_sentence_end(&self) -> bool {
        let h = &self.hypothesis;
        let ended_sentence = h
            .words
            .last()
            .is_some_and(|w| w.ends_with(['.', '?', '!', '…', '。', '？', '！']));
        self.stalled(STUCK_VOICED_MS) && ended_sentence && h.logprob >= LOGPROB_THRESHOLD
    }

    /// Whether the latest partial hypothesis, not empty, has stayed the same while `ms` of
    /// speech went on.
    fn stalled(&self, ms: u64) -> bool {
        let h = &self.hypothesis;
        let voiced_since =
            (self.voiced_frames - h.voiced_at_change) as u64 * FRAME_SAMPLES as u64 * 1000 / 16_000;
        voiced_since >= ms && !h.text_tokens.is_empty()
    }

    /// Forgets what the segment's hypotheses agreed on and were pushed past.
    fn start_over(&mut self, stable_agreement: u32) {
        self.agreement = Agreement::new(stable_agreement as usize);
        self.hypothesis = Hypothesis::default();
    }

    /// After the partials' audio moved (a trim or a joint): starts over with a hypothesis that
    /// changed now and no partial text shown for the new audio yet.
    fn restart_partials(&mut self, stable_agreement: u32) {
        self.start_over(stable_agreement);
        self.hypothesis.voiced_at_change = self.voiced_frames;
        self.hypothesis.frames_at_change = self.probs.len();
        self.last_partial_text.clear();
    }
}

/// The captioner of one track.
pub struct Captioner {
    settings: StreamSettings,
    track: String,
    whisper: Whisper,
    vad: SileroVad,
    pending: Vec<f32>,
    /// Absolute sample of the next frame.
    pos: u64,
    preroll: VecDeque<([f32; FRAME_SAMPLES], f32)>,
    preroll_frames: usize,
    seg: Option<Segment>,
    seq: u64,
    segments: u32,
    locked_language: Option<String>,
    /// With diarization: the language locked for each voice (speaker index).
    voice_languages: HashMap<usize, String>,
    /// Text tokens of the latest finals, given to the decoder as context (see
    /// [`StreamSettings::condition_on_previous_text`]), and their language.
    context: Vec<u32>,
    context_language: Option<String>,
    clock: Box<dyn Fn() -> f64 + Send>,
    /// Stamp events with the audio consumed instead of `clock` (see
    /// [`Captioner::with_audio_clock`]).
    audio_clock: bool,
    /// A language probe follows the latest partial (see [`Captioner::run_due_probe`]).
    probe_due: bool,
    stats: CaptionerStats,
    diarizer: Option<TrackDiarizer>,
}

/// The diarization side of a captioner.
struct TrackDiarizer {
    worker: Diarizer,
    names: SpeakerNames,
    min_run_s: f64,
    /// Ends (absolute samples) of the voiced frames sent and not yet past the change horizon.
    sent: VecDeque<u64>,
    /// Newest window index a change was looked for at.
    last_checked: Option<u64>,
    /// Speaker turns of the closed segments' voiced audio, not yet taken.
    turns: Vec<Turn>,
}

impl Captioner {
    /// A captioner for `track`. `clock` gives `emitted_at` (seconds since sample 0 entered).
    pub fn new(
        settings: StreamSettings,
        track: impl Into<String>,
        whisper: Whisper,
        vad: SileroVad,
        clock: Box<dyn Fn() -> f64 + Send>,
    ) -> Result<Self, CaptionError> {
        settings.validate()?;
        if let LanguageSetting::Fixed(code) = &settings.language
            && !whisper.knows_language(code)
        {
            return Err(AsrError::UnknownLanguage(format!(
                "{code}` for model `{}",
                whisper.name()
            ))
            .into());
        }
        // an English-only model has nothing to detect; a multilingual one must know every code
        if let Some(code) = settings
            .auto_languages
            .iter()
            .find(|c| whisper.multilingual() && !whisper.knows_language(c))
        {
            return Err(AsrError::UnknownLanguage(format!(
                "{code}` (auto_languages) for model `{}",
                whisper.name()
            ))
            .into());
        }
        let preroll_frames =
            (ms_to_samples(settings.speech_pad_ms) as usize).div_ceil(FRAME_SAMPLES);
        Ok(Self {
            settings,
            track: track.into(),
            whisper,
            vad,
            pending: Vec::with_capacity(FRAME_SAMPLES * 4),
            pos: 0,
            preroll: VecDeque::with_capacity(preroll_frames + 1),
            preroll_frames,
            seg: None,
            seq: 0,
            segments: 0,
            locked_language: None,
            voice_languages: HashMap::new(),
            context: Vec::new(),
            context_language: None,
            clock,
            audio_clock: false,
            probe_due: false,
            stats: CaptionerStats::default(),
            diarizer: None,
        })
    }

    /// Stamps events with the audio consumed when they were emitted instead of the clock: as
    /// if every decode took no time. `emitted_at − end` is then the latency of the streaming
    /// policy alone (partial cadence, held-back words, endpoint silence...), the same from run
    /// to run whatever the machine's load: what settings are compared on. The caller must
    /// then also feed the audio with `busy = false`, so that no partial is skipped.
    pub fn with_audio_clock(mut self) -> Self {
        self.audio_clock = true;
        self
    }

    /// Adds diarization: `worker` gets the voiced frames; labels are named after `participant`
    /// (see [`SpeakerNames`]).
    pub fn with_diarizer(
        mut self,
        worker: Diarizer,
        settings: &DiarizeSettings,
        participant: Option<String>,
    ) -> Result<Self, CaptionError> {
        settings.validate()?;
        self.diarizer = Some(TrackDiarizer {
            worker,
            names: SpeakerNames::new(participant),
            min_run_s: settings.min_run_ms as f64 / 1000.0,
            sent: VecDeque::new(),
            last_checked: None,
            turns: Vec::new(),
        });
        Ok(self)
    }

    /// Number of labels given to finals so far (0 without diarization).
    pub fn speaker_count(&self) -> usize {
        self.diarizer.as_ref().map_or(0, |d| d.names.count())
    }

    /// Labels given to finals so far (empty without diarization).
    pub fn speaker_labels(&self) -> Vec<String> {
        self.diarizer
            .as_ref()
            .map_or_else(Vec::new, |d| d.names.labels())
    }

    /// With diarization: who spoke when, from the voiced audio of the segments closed so far
    /// (every voiced frame takes the speaker of the embedding window centred nearest, under the
    /// labels of the finals), whether or not the recognizer found words in it; turns of one
    /// speaker less than [`DEFAULT_JOIN_GAP_S`] apart are joined. Taken once: later calls return
    /// the turns closed since. Empty without diarization.
    pub fn take_turns(&mut self) -> Vec<Turn> {
        let Some(d) = self.diarizer.as_mut() else {
            return Vec::new();
        };
        let mut turns: Vec<Turn> = Vec::new();
        for t in d.turns.drain(..) {
            match turns.last_mut() {
                Some(last)
                    if last.speaker == t.speaker && t.start - last.end <= DEFAULT_JOIN_GAP_S =>
                {
                    last.end = last.end.max(t.end)
                }
                _ => turns.push(t),
            }
        }
        turns
    }

    /// Counters so far.
    pub fn stats(&self) -> &CaptionerStats {
        &self.stats
    }

    /// The settings in force.
    pub fn settings(&self) -> &StreamSettings {
        &self.settings
    }

    /// Audio time consumed so far, seconds.
    pub fn position_s(&self) -> f64 {
        (self.pos as f64 + self.pending.len() as f64) / SAMPLE_RATE
    }

    /// Feeds 16 kHz mono samples. `busy` says more input is already waiting, so optional work
    /// (partials, speculative decodes) is skipped. Events are appended to `out`.
    pub fn push(
        &mut self,
        samples: &[f32],
        busy: bool,
        out: &mut Vec<CaptionEvent>,
    ) -> Result<(), CaptionError> {
        let mut rest = samples;
        while !rest.is_empty() {
            let take = (FRAME_SAMPLES - self.pending.len()).min(rest.len());
            self.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.pending.len() == FRAME_SAMPLES {
                let mut frame = [0.0f32; FRAME_SAMPLES];
                frame.copy_from_slice(&self.pending);
                self.pending.clear();
                self.on_frame(&frame, busy || rest.len() >= FRAME_SAMPLES, out)?;
            }
        }
        Ok(())
    }

    /// Ends the stream: the last partial frame is padded with silence and any open segment gets
    /// its final.
    pub fn finish(&mut self, out: &mut Vec<CaptionEvent>) -> Result<(), CaptionError> {
        self.run_due_probe(out)?;
        if !self.pending.is_empty() {
            let mut frame = [0.0f32; FRAME_SAMPLES];
            frame[..self.pending.len()].copy_from_slice(&self.pending);
            self.pending.clear();
            // the final follows at once: no partial or speculative decode before it
            self.on_frame(&frame, true, out)?;
        }
        if let Some(seg) = self.seg.take() {
            let pad = ms_to_samples(self.settings.speech_end_pad_ms);
            let end = (seg.last_voiced_end + pad).min(seg.end());
            self.finalize(seg, end, out)?;
        }
        Ok(())
    }

    /// Audio was lost (`samples` missing): the open segment is closed with what was heard and
    /// the stream continues after the hole. Nothing is invented for the missing audio.
    pub fn gap(&mut self, samples: u64, out: &mut Vec<CaptionEvent>) -> Result<(), CaptionError> {
        self.run_due_probe(out)?;
        self.pending.clear();
        if let Some(seg) = self.seg.take() {
            let end = seg.end();
            self.finalize(seg, end, out)?;
        }
        self.preroll.clear();
        self.vad.reset();
        // what follows a hole does not continue what was heard before it
        self.context.clear();
        self.pos += samples;
        self.stats.audio_s += samples as f64 / SAMPLE_RATE;
        Ok(())
    }

    fn on_frame(
        &mut self,
        frame: &[f32; FRAME_SAMPLES],
        busy: bool,
        out: &mut Vec<CaptionEvent>,
    ) -> Result<(), CaptionError> {
        self.run_due_probe(out)?;
        let t = std::time::Instant::now();
        let p = self.vad.process(frame)?;
        self.stats.vad_s += t.elapsed().as_secs_f64();
        self.stats.audio_s += FRAME_S;
        let frame_start = self.pos;
        self.pos += FRAME_SAMPLES as u64;
        let s = &self.settings;
        if let Some(d) = self.diarizer.as_mut() {
            let voiced = match self.seg {
                Some(_) => p >= s.vad_release,
                None => p >= s.vad_threshold,
            };
            if voiced {
                d.worker.push_voiced(frame_start, frame);
                d.sent.push_back(self.pos);
            }
        }
        let pad = ms_to_samples(s.speech_end_pad_ms);

        let Some(seg) = self.seg.as_mut() else {
            if p >= s.vad_threshold {
                // speech onset: the segment starts with the pre-roll
                let mut audio = Vec::with_capacity(ms_to_samples(4_000) as usize);
                let mut probs = Vec::new();
                for (f, fp) in self.preroll.drain(..) {
                    audio.extend_from_slice(&f);
                    probs.push(fp);
                }
                let start = frame_start - audio.len() as u64;
                audio.extend_from_slice(frame);
                probs.push(p);
                self.seg = Some(Segment::open(
                    start,
                    audio,
                    probs,
                    self.pos,
                    start + ms_to_samples(s.partial_interval_ms),
                    s.stable_agreement,
                ));
            } else {
                self.preroll.push_back((*frame, p));
                while self.preroll.len() > self.preroll_frames {
                    self.preroll.pop_front();
                }
            }
            return Ok(());
        };

        seg.audio.extend_from_slice(frame);
        seg.probs.push(p);
        if p >= s.vad_release {
            seg.last_voiced_end = self.pos;
            seg.voiced_frames += 1;
            seg.silence_frames = 0;
            if seg.speculative.take().is_some() {
                self.stats.speculative_misses += 1;
            }
        } else {
            seg.silence_frames += 1;
        }
        let silence = seg.silence_frames as u64 * FRAME_SAMPLES as u64;
        let voiced_ms = seg.voiced_frames as u64 * FRAME_SAMPLES as u64 * 1000 / 16_000;
        let enough_speech = voiced_ms >= s.min_speech_ms as u64;

        let endpoint_ms = if seg.audio.len() as f64 >= s.long_segment_s as f64 * SAMPLE_RATE {
            s.long_segment_endpoint_ms
        } else {
            s.endpoint_silence_ms
        };
        if silence >= ms_to_samples(endpoint_ms) {
            let seg = self.seg.take().expect("segment is open");
            let end = seg.last_voiced_end + pad;
            // the silence after the cut becomes the pre-roll of the next segment
            let keep_from = ((end - seg.start) as usize / FRAME_SAMPLES).min(seg.probs.len());
            self.preroll.clear();
            for i in keep_from..seg.probs.len() {
                let mut f = [0.0f32; FRAME_SAMPLES];
                f.copy_from_slice(&seg.audio[i * FRAME_SAMPLES..(i + 1) * FRAME_SAMPLES]);
                self.preroll.push_back((f, seg.probs[i]));
            }
            while self.preroll.len() > self.preroll_frames {
                self.preroll.pop_front();
            }
            return self.finalize(seg, end, out);
        }
        let max_len = (s.max_segment_s as f64 * SAMPLE_RATE) as u64;
        if seg.audio.len() as u64 >= max_len {
            return self.forced_cut(out);
        }
        if let Some(cut) = self.speaker_change_cut()? {
            return self.cut_at(cut, out);
        }
        let Some(seg) = self.seg.as_ref() else {
            return Ok(());
        };
        let silence = seg.silence_frames as u64 * FRAME_SAMPLES as u64;
        if busy || !enough_speech {
            // optional work stays due and is done as soon as the input is caught up
            return Ok(());
        }
        // optional work, only when caught up
        if silence >= pad && seg.speculative.is_none() {
            let end = seg.last_voiced_end + pad;
            let decoded = self.decode_final_audio(end)?;
            if self.settings.partials {
                self.show_speculative(&decoded, out)?;
            }
            if let Some(seg) = self.seg.as_mut() {
                seg.speculative = Some((end, decoded));
            }
            return Ok(());
        }
        if self.settings.partials && seg.next_partial_at <= self.pos && silence < pad {
            self.partial(out)?;
        }
        Ok(())
    }

    /// Options for a final decode of the audio from absolute sample `start` to `end`, following
    /// the language policy.
    fn final_options(
        &mut self,
        start: u64,
        end: u64,
        segment_language: Option<&String>,
    ) -> Result<DecodeOptions, CaptionError> {
        let voice = self.voice_of(start, end)?;
        Ok(DecodeOptions {
            language: self.language_for(segment_language, voice),
            timestamps: self.settings.timestamps,
            context: self.context.clone(),
            context_language: self.context_language.clone(),
            ..Default::default()
        })
    }

    /// With diarization and `language = auto`: the voice speaking from absolute sample `start`
    /// to `end` — the speaker most embedding windows centred there were first given (a label
    /// never revised, so the answer depends on the audio only), else the speaker of the window
    /// centred nearest. Waits for the diarization thread to have every frame sent so far.
    fn voice_of(&mut self, start: u64, end: u64) -> Result<Option<usize>, CaptionError> {
        if self.settings.language != LanguageSetting::Auto {
            return Ok(None);
        }
        let Some(d) = self.diarizer.as_mut() else {
            return Ok(None);
        };
        let t = std::time::Instant::now();
        d.worker.sync()?;
        self.stats.diarize_wait_s += t.elapsed().as_secs_f64();
        let (from, to) = (start as f64 / SAMPLE_RATE, end as f64 / SAMPLE_RATE);
        Ok(d.worker.with_labels(|l| {
            let mut counts: Vec<(usize, usize)> = Vec::new();
            for s in l
                .windows()
                .filter(|w| w.centre >= from && w.centre <= to)
                .filter_map(|w| w.first_speaker)
            {
                match counts.iter_mut().find(|(k, _)| *k == s) {
                    Some((_, n)) => *n += 1,
                    None => counts.push((s, 1)),
                }
            }
            // most windows; the earliest seen wins a tie
            let best = counts
                .iter()
                .fold(None::<(usize, usize)>, |b, &(k, n)| match b {
                    Some((_, bn)) if bn >= n => b,
                    _ => Some((k, n)),
                });
            best.map(|(k, _)| k).or_else(|| {
                l.windows()
                    .filter(|w| w.first_speaker.is_some())
                    .min_by(|a, b| {
                        (a.centre - (from + to) / 2.0)
                            .abs()
                            .total_cmp(&(b.centre - (from + to) / 2.0).abs())
                    })
                    .and_then(|w| w.first_speaker)
            })
        }))
    }

    /// The language to decode with. With `auto`, the language detected last is locked: every
    /// decode detects again (a one-step decode) and keeps it unless another is confidently
    /// detected. Within a segment, the language its partials settled on (`segment`) is the one
    /// detected last, so a speaker switching language is followed from the turn's first
    /// partials, and its final keeps that language instead of being transcribed (or translated)
    /// in the previous turn's; a segment without partials (input behind) falls back on the
    /// stream's lock. With diarization the lock is per voice: a voice heard for the first time
    /// is detected freely, so two people speaking different languages on one microphone each
    /// keep theirs.
    fn language_for(&self, segment: Option<&String>, voice: Option<usize>) -> Language {
        match &self.settings.language {
            LanguageSetting::Fixed(code) => Language::Fixed(code.clone()),
            LanguageSetting::Auto => {
                let locked = match voice {
                    Some(v) => self.voice_languages.get(&v),
                    None => self.locked_language.as_ref(),
                };
                let prefer = segment.or(locked);
                Language::Detect {
                    prefer: prefer.cloned(),
                    switch_confidence: self.settings.language_switch_confidence,
                    among: self.settings.auto_languages.clone(),
                }
            }
        }
    }

    /// Decodes the open segment's current part up to absolute sample `end` as a final would.
    fn decode_final_audio(&mut self, end: u64) -> Result<Decoded, CaptionError> {
        let seg = self.seg.as_ref().expect("segment is open");
        let from = seg.part_start * FRAME_SAMPLES;
        let (start, language) = (seg.start + from as u64, seg.language.clone());
        let opts = self.final_options(start, end, language.as_ref())?;
        let seg = self.seg.as_ref().expect("segment is open");
        let n = ((end - seg.start) as usize).min(seg.audio.len()).max(from);
        let t = std::time::Instant::now();
        let d = self.whisper.transcribe(&seg.audio[from..n], &opts);
        self.stats.asr_s += t.elapsed().as_secs_f64();
        Ok(d?)
    }

    /// A partial, then (`auto`) a probe of the latest audio's language, which may cut the
    /// segment where another language started (run before the next frame: the partial's
    /// events are handed out first).
    fn partial(&mut self, out: &mut Vec<CaptionEvent>) -> Result<(), CaptionError> {
        match self.stuck_at()? {
            None => {}
            Some((cut, None)) => self.trim_view(cut, true)?,
            Some((cut, Some(language))) => {
                if self.settings.language_change_cut {
                    // each language its own final: the joint is a cut
                    self.stats.language_cuts += 1;
                    self.cut_at(cut, out)?;
                } else {
                    self.close_part(cut, out)?;
                }
                // the rest goes on in the language heard after the joint
                if let Some(seg) = self.seg.as_mut() {
                    seg.language = Some(language);
                }
            }
        }
        self.partial_decode(out)?;
        // the probe waits for the next frame, so the partial leaves first
        self.probe_due = true;
        Ok(())
    }

    /// The language probe due after a partial (see [`Captioner::partial`]), run before the
    /// next frame is taken in (or at the end of the stream): the same audio as right after the
    /// partial, so the same decision, but the partial is handed out without waiting for it.
    fn run_due_probe(&mut self, out: &mut Vec<CaptionEvent>) -> Result<(), CaptionError> {
        if !std::mem::take(&mut self.probe_due) {
            return Ok(());
        }
        if let Some((cut, language)) = self.language_change_cut()? {
            self.stats.language_cuts += 1;
            self.cut_at(cut, out)?;
            if let Some(seg) = self.seg.as_mut() {
                // the rest already holds seconds of speech never shown in its language
                seg.language = Some(language);
            }
        }
        Ok(())
    }

    /// The language heard in the open segment's audio from sample index `from` on (one short
    /// encoder pass among `auto_languages`), decided as a switch from `current` is (see
    /// [`choose_language`]: another language needs `confidence`, English on short audio
    /// more), and the probability of the language detected.
    fn hear(
        &mut self,
        from: usize,
        current: &str,
        confidence: f32,
    ) -> Result<(String, f32), CaptionError> {
        let seg = self.seg.as_ref().expect("segment is open");
        let audio = &seg.audio[from..];
        let audio_s = audio.len() as f32 / SAMPLE_RATE as f32;
        let t = std::time::Instant::now();
        let probed = self
            .whisper
            .identify_language(audio, &self.settings.auto_languages);
        self.stats.asr_s += t.elapsed().as_secs_f64();
        self.stats.language_probes += 1;
        let (code, p) = probed?;
        tracing::trace!(
            track = %self.track,
            at_s = self.pos as f64 / SAMPLE_RATE,
            current,
            detected = %code,
            p,
            audio_s,
            "language probe"
        );
        let current = current.to_string();
        Ok((
            choose_language(code, p, Some(&current), confidence, audio_s),
            p,
        ))
    }

    /// With `language = auto`: the frame (index in the open segment) where it should be cut
    /// because its latest [`LANGUAGE_PROBE_S`] are confidently in another language than the
    /// one its partials decode in, twice in a row (the probes are [`partial_interval_ms`]
    /// apart), and that language. Turns in two languages that follow each other with a pause
    /// shorter than the endpoint silence, or overlap, then get a final each, in their own
    /// language, instead of one being translated into the other or dropped. The cut is at the
    /// longest pause (then the quietest frame) between [`LANGUAGE_CUT_SEARCH_S`] before the
    /// probed tail and [`LANGUAGE_CUT_GUARD_S`] before now.
    ///
    /// [`partial_interval_ms`]: StreamSettings::partial_interval_ms
    fn language_change_cut(&mut self) -> Result<Option<(usize, String)>, CaptionError> {
        if self.settings.language != LanguageSetting::Auto || !self.settings.language_change_cut {
            return Ok(None);
        }
        let Some(seg) = self.seg.as_ref() else {
            return Ok(None);
        };
        let Some(current) = seg.language.clone() else {
            return Ok(None);
        };
        let tail = (LANGUAGE_PROBE_S * SAMPLE_RATE) as usize;
        let left = (LANGUAGE_PROBE_LEFT_S * SAMPLE_RATE) as usize;
        let n = seg.audio.len();
        if n < tail + left {
            return Ok(None);
        }
        let (heard, p) = self.hear(n - tail, &current, LANGUAGE_CUT_CONFIDENCE)?;
        let seg = self.seg.as_mut().expect("segment is open");
        if heard == current {
            seg.probe = None;
            return Ok(None);
        }
        tracing::debug!(
            track = %self.track,
            at_s = self.pos as f64 / SAMPLE_RATE,
            from = %current,
            to = %heard,
            p,
            confirmed = seg.probe.as_deref() == Some(heard.as_str()),
            "another language heard"
        );
        if seg.probe.as_deref() != Some(heard.as_str()) {
            seg.probe = Some(heard);
            return Ok(None);
        }
        seg.probe = None;
        let frames = seg.probs.len();
        let lo = ((n - tail) as f64 / SAMPLE_RATE - LANGUAGE_CUT_SEARCH_S) / FRAME_S;
        let lo = (lo.max(0.0) as usize).max((LANGUAGE_PROBE_LEFT_S / FRAME_S) as usize);
        let hi = frames.saturating_sub((LANGUAGE_CUT_GUARD_S / FRAME_S) as usize);
        if lo >= hi {
            return Ok(None);
        }
        Ok(Some((
            pause_in(&seg.probs[lo..hi], self.settings.vad_release) + lo,
            heard,
        )))
    }

    fn partial_decode(&mut self, out: &mut Vec<CaptionEvent>) -> Result<(), CaptionError> {
        // partials do not wait for the diarization thread: the latest window's voice
        let voice = match (&self.diarizer, &self.settings.language) {
            (Some(d), LanguageSetting::Auto) => d.worker.with_labels(|l| l.current()),
            _ => None,
        };
        let language =
            self.language_for(self.seg.as_ref().and_then(|s| s.language.as_ref()), voice);
        let seg = self.seg.as_mut().expect("segment is open");
        let interval = ms_to_samples(self.settings.partial_interval_ms);
        // partial times that passed while the captioner was catching up
        self.stats.skipped_partials += (self.pos - seg.next_partial_at) / interval;
        seg.next_partial_at = self.pos + interval;
        // words shown longer ago than the revision window are kept: the decoder continues them
        settle_shown(
            seg,
            &self.whisper,
            self.pos as f64 / SAMPLE_RATE,
            self.settings.revision_window_ms,
        )?;
        // the hypothesis stopped growing while speech went on: it must go past where it stopped
        if seg.stuck_at_sentence_end() {
            let h = &mut seg.hypothesis;
            h.min_text_tokens = h.min_text_tokens.max(h.text_tokens.len() + 1);
        }
        let mut min_text_tokens = seg.hypothesis.min_text_tokens;
        // after a trim, the words shown before it are the context
        let (context, context_language) = if seg.view_tokens.is_empty() {
            (self.context.clone(), self.context_language.clone())
        } else {
            let excess = seg.view_tokens.len().saturating_sub(MAX_CONTEXT_TOKENS);
            (seg.view_tokens[excess..].to_vec(), seg.language.clone())
        };
        let mut opts = DecodeOptions {
            language,
            timestamps: false,
            min_text_tokens,
            prefix: seg.agreement.stable().to_vec(),
            context,
            context_language,
            tokens_per_second: PARTIAL_TOKENS_PER_SECOND,
            stop_on_repeated_ngram: Some(PARTIAL_REPEAT_NGRAM),
            ..Default::default()
        };
        let mut from = seg.view_start * FRAME_SAMPLES;
        let t = std::time::Instant::now();
        let mut d = self.whisper.transcribe(&seg.audio[from..], &opts);
        if let Ok(new) = &d
            && seg.language.is_some()
            && new.language != seg.language
        {
            // the speaker changed language: what the segment's hypotheses agreed on (and were
            // pushed past) was in the other one, so they start over in the new language
            tracing::debug!(
                track = %self.track,
                from = ?seg.language,
                to = ?new.language,
                "partial language switch"
            );
            let switch_trim = switch_trim_at(seg, self.pos as f64 / SAMPLE_RATE, &self.settings);
            seg.start_over(self.settings.stable_agreement);
            min_text_tokens = 0;
            let retry = !opts.prefix.is_empty() || opts.min_text_tokens > 0;
            if let Some((settled, cut)) = switch_trim {
                // the words read long enough ago stay as shown (their text is no context for
                // the other language); the new one is decoded from the pause after them
                seg.shown.truncate(settled);
                self.trim_view(cut, false)?;
                from = cut * FRAME_SAMPLES;
                opts.context.clear();
            }
            if retry || switch_trim.is_some() {
                opts.prefix.clear();
                opts.min_text_tokens = 0;
                opts.language = Language::Fixed(new.language.clone().unwrap_or_default());
                let seg = self.seg.as_ref().expect("segment is open");
                d = self.whisper.transcribe(&seg.audio[from..], &opts);
            }
        }
        let seg = self.seg.as_mut().expect("segment is open");
        if let Ok(echo) = &d
            && echo.guards.contains(&Guard::ContextEcho)
            && !opts.prefix.is_empty()
        {
            // the agreed prefix itself repeats the previous caption: drop it and start over
            seg.start_over(self.settings.stable_agreement);
            min_text_tokens = 0;
            opts.prefix.clear();
            opts.min_text_tokens = 0;
            opts.context.clear();
            d = self.whisper.transcribe(&seg.audio[from..], &opts);
        }
        self.stats.asr_s += t.elapsed().as_secs_f64();
        let d = d?;
        if self.settings.language == LanguageSetting::Auto {
            if seg.language != d.language {
                seg.language_run = 0;
            }
            seg.language = d.language.clone();
        }
        seg.language_run += 1;
        if !d.guards.is_empty() {
            self.stats.guarded += 1;
        }
        tracing::trace!(
            track = %self.track,
            at_s = self.pos as f64 / SAMPLE_RATE,
            guards = ?d.guards,
            avg_logprob = d.avg_logprob,
            min_text_tokens,
            text = %d.text,
            "partial decode"
        );
        // a pushed decode that started over, fell short or is unsure is not shown (the text
        // shown stays as it was; the next partial tries again)
        if min_text_tokens > 0
            && (!d.guards.is_empty()
                || d.text_tokens.len() < min_text_tokens
                || d.avg_logprob < LOGPROB_THRESHOLD)
        {
            return Ok(());
        }
        let mut d = d;
        self.cut_restart(&mut d)?;
        let whisper = &self.whisper;
        let seg = self.seg.as_mut().expect("segment is open");
        seg.agreement
            .update(&d.text_tokens, |t| whisper.starts_word(t));
        let mut words: Vec<&str> = d.text.split_whitespace().collect();
        // while the speaker is mid-word the last decoded word is a guess: hold it back, unless
        // the previous hypothesis already ended with it (the decoder stopped there twice, the
        // word is complete: typically a sentence end followed by another voice)
        let stable_words = whisper
            .decode_text(seg.agreement.stable())?
            .split_whitespace()
            .count();
        let speaking = seg
            .probs
            .last()
            .is_some_and(|p| *p >= self.settings.vad_threshold);
        let h = &mut seg.hypothesis;
        let seen_last = words.len() == h.words.len()
            && words.last().copied() == h.words.last().map(String::as_str);
        if !words.iter().eq(h.words.iter()) {
            h.voiced_at_change = seg.voiced_frames;
            h.frames_at_change = seg.probs.len();
        }
        h.words = words.iter().map(|w| w.to_string()).collect();
        h.text_tokens = d.text_tokens.clone();
        h.logprob = d.avg_logprob;
        if speaking && words.len() > stable_words.max(1) && !seen_last {
            words.pop();
        }
        let language = d.language.clone();
        self.show_view(&words, language, out)
    }

    /// At the start of a pause (`speech_end_pad_ms` of silence) the speculative final decode has
    /// heard the whole current part, including the words a partial holds back while they may
    /// still be spoken (the last one) or that the last partial came too early for. When its
    /// text goes on from the words the view shows (same words, compared [`normalized`]), in
    /// the view's language and without a guard, the words after them are shown at once, in a
    /// partial, instead of at the next partial after the pause or at the final. Nothing else
    /// changes: the partials' agreement goes on as before.
    fn show_speculative(
        &mut self,
        d: &Decoded,
        out: &mut Vec<CaptionEvent>,
    ) -> Result<(), CaptionError> {
        let Some(seg) = self.seg.as_ref() else {
            return Ok(());
        };
        if !d.guards.is_empty()
            || d.avg_logprob < LOGPROB_THRESHOLD
            || (seg.language.is_some() && d.language != seg.language)
        {
            return Ok(());
        }
        let heard: Vec<&str> = d.text.split_whitespace().collect();
        let on_screen: Vec<&str> = seg
            .view_words
            .iter()
            .chain(&seg.shown)
            .map(|w| w.text.as_str())
            .collect();
        let n = on_screen.len();
        if heard.len() <= n || normalized(&on_screen) != normalized(&heard[..n]) {
            return Ok(());
        }
        // the view's words as shown, then the ones heard after them
        let words: Vec<String> = on_screen[seg.view_words.len()..]
            .iter()
            .chain(&heard[n..])
            .map(|w| w.to_string())
            .collect();
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        self.stats.speculative_partials += 1;
        let language = d.language.clone();
        self.show_view(&words, language, out)
    }

    /// Emits the partial showing `words` as the open segment's view (the audio after the last
    /// trim or joint), after the words shown before a trim, unless the view already shows
    /// them. The words are timed over the view's voiced audio.
    fn show_view(
        &mut self,
        words: &[&str],
        language: Option<String>,
        out: &mut Vec<CaptionEvent>,
    ) -> Result<(), CaptionError> {
        let whisper = &self.whisper;
        let seg = self.seg.as_mut().expect("segment is open");
        let text = words.join(" ");
        if text.is_empty() || text == seg.last_partial_text {
            return Ok(());
        }
        let stable_text = whisper
            .decode_text(seg.agreement.stable())?
            .trim()
            .to_string();
        seg.last_partial_text = text.clone();
        let words: Vec<&str> = text.split_whitespace().collect();
        let origin = (seg.start + (seg.view_start * FRAME_SAMPLES) as u64) as f64 / SAMPLE_RATE;
        let voiced = voiced_spans(
            &seg.probs[seg.view_start..],
            self.settings.vad_release,
            origin,
            FRAME_S,
        );
        let t0 = voiced.first().map_or(origin, |v| v.0);
        let t1 = seg.last_voiced_end as f64 / SAMPLE_RATE;
        let timed = spread_words(&words, t0, t1, &voiced);
        // (the next partial settles those it must keep: see settle_shown)
        seg.shown = timed.clone();
        // the words before a trim stay as they were shown
        let mut all: Vec<TimedWord> = seg.view_words.clone();
        let stable_text = all
            .iter()
            .map(|w| w.text.as_str())
            .chain(stable_text.split_whitespace())
            .collect::<Vec<_>>()
            .join(" ");
        all.extend(timed);
        let language = language.or_else(|| Some("en".into()));
        let mut ev = self.make_event(EventKind::Partial, all, stable_text, language);
        if let Some(d) = &self.diarizer {
            ev.speaker = d
                .worker
                .with_labels(|l| l.current())
                .map(|s| d.names.provisional(s));
        }
        self.stats.partials += 1;
        out.push(ev);
        Ok(())
    }

    /// When the segment's partial hypothesis has stayed at the end of a sentence, confidently,
    /// while [`STUCK_VOICED_MS`] of speech went on: the frame (index in the open segment) after
    /// that sentence, and, with `language = auto`, the language heard from there on if it is
    /// another one. On audio cut mid-speech Whisper tends to stop at a sentence end when another
    /// sentence or voice follows without an endpoint pause, and may not go on for seconds.
    ///
    /// The frame is the longest pause (else the quietest frame) from [`JOINT_SEARCH_S`] before
    /// the hypothesis last changed to [`JOINT_GUARD_S`] before now, at least [`MIN_PART_S`]
    /// after the start of the audio partials decode. With `auto` the audio from there on is
    /// probed (one short encoder pass); heard in another language than the part's, as the
    /// partials' detection would switch (`language_switch_confidence`; English on short audio:
    /// 0.95), it makes a *joint* (see [`Self::close_part`]): in another language the decoder
    /// may never go on, and the next turn would be dropped or translated at the final.
    /// Otherwise the partials are *trimmed* there (see [`Self::trim_view`]).
    fn stuck_at(&mut self) -> Result<Option<(usize, Option<String>)>, CaptionError> {
        let Some(seg) = self.seg.as_ref() else {
            return Ok(None);
        };
        if !seg.stuck_at_sentence_end() || seg.shown.is_empty() {
            return Ok(None);
        }
        let n = seg.probs.len();
        let lo = (seg.view_start + (MIN_PART_S / FRAME_S) as usize).max(
            seg.hypothesis
                .frames_at_change
                .saturating_sub((JOINT_SEARCH_S / FRAME_S) as usize),
        );
        let hi = n.saturating_sub((JOINT_GUARD_S / FRAME_S) as usize);
        if lo >= hi {
            return Ok(None);
        }
        let cut = pause_in(&seg.probs[lo..hi], self.settings.vad_release) + lo;
        if self.settings.language != LanguageSetting::Auto {
            return Ok(Some((cut, None)));
        }
        let Some(current) = seg.language.clone() else {
            return Ok(None);
        };
        let confidence = self.settings.language_switch_confidence;
        let (heard, _) = self.hear(cut * FRAME_SAMPLES, &current, confidence)?;
        Ok(Some((cut, (heard != current).then_some(heard))))
    }

    /// Moves the start of the audio partials decode to the open segment's frame `cut`, after a
    /// sentence the hypothesis was stuck at while speech went on in the same language (a
    /// *trim*): the words shown so far stay as they were, their text becomes the partials'
    /// decoding context, and later partials decode only the audio after the trim, so the next
    /// sentence is shown at the next partial instead of after the decoder is pushed past the
    /// sentence end. Only the partials are trimmed: the final still decodes the whole part,
    /// sentences together. Without `as_context` (a trim at a language switch) the words before
    /// the trim are no decoding context.
    fn trim_view(&mut self, cut: usize, as_context: bool) -> Result<(), CaptionError> {
        let seg = self.seg.as_mut().expect("segment is open");
        let shown = std::mem::take(&mut seg.shown);
        let text: String = shown.iter().map(|w| format!(" {}", w.text)).collect();
        if as_context {
            seg.view_tokens.extend(self.whisper.encode_text(&text)?);
        } else {
            seg.view_tokens.clear();
        }
        tracing::debug!(
            track = %self.track,
            at_s = self.pos as f64 / SAMPLE_RATE,
            trim_s = (seg.start + (cut * FRAME_SAMPLES) as u64) as f64 / SAMPLE_RATE,
            shown = %text.trim(),
            "trim"
        );
        seg.view_words.extend(shown);
        seg.view_start = cut;
        seg.restart_partials(self.settings.stable_agreement);
        self.stats.trims += 1;
        Ok(())
    }

    /// Closes the open segment's current part at its frame `cut` (a joint): the part is decoded
    /// and its final emitted at once, in its own language (its text becomes the decoding
    /// context), and the segment goes on under a new id, its partials decoding and showing only
    /// the audio after the joint. The words are those a final at the endpoint would have had
    /// for that audio: a joint changes when they are final, not what they are.
    fn close_part(&mut self, cut: usize, out: &mut Vec<CaptionEvent>) -> Result<(), CaptionError> {
        let mut seg = self.seg.take().expect("segment is open");
        let (from, to) = (seg.part_start * FRAME_SAMPLES, cut * FRAME_SAMPLES);
        let (start, end) = (seg.start + from as u64, seg.start + to as u64);
        let window = FinalWindow {
            audio: &seg.audio[from..to],
            probs: &seg.probs[seg.part_start..cut],
            start,
            last_voiced_end: seg.last_voiced_end.min(end),
            language: seg.language.as_ref(),
        };
        let decoded = self.final_words(window, None, 0).and_then(|d| {
            self.record_turns(start, &seg.probs[seg.part_start..cut], end)
                .map(|()| d)
        });
        let (words, language) = match decoded {
            Ok(d) => d,
            Err(e) => {
                self.seg = Some(seg);
                return Err(e);
            }
        };
        let language = language.or_else(|| seg.language.clone());
        self.stats.joints += 1;
        tracing::debug!(
            track = %self.track,
            at_s = self.pos as f64 / SAMPLE_RATE,
            joint_s = end as f64 / SAMPLE_RATE,
            language = ?language,
            part = %words.iter().map(|w| w.text.as_str()).collect::<Vec<_>>().join(" "),
            "joint"
        );
        seg.view_words.clear();
        seg.shown.clear();
        seg.view_tokens.clear();
        seg.part_start = cut;
        seg.view_start = cut;
        seg.restart_partials(self.settings.stable_agreement);
        seg.speculative = None;
        seg.probe = None;
        self.seg = Some(seg);
        self.remember_context(&words, language.as_deref())?;
        if !words.is_empty() || self.seg.as_ref().is_some_and(|s| s.id.is_some()) {
            self.emit_finals(words, language.or_else(|| Some("en".into())), out)?;
        }
        // what follows the joint is a segment of its own
        let seg = self.seg.as_mut().expect("segment is open");
        seg.id = None;
        seg.revision = 0;
        seg.last_partial_text.clear();
        Ok(())
    }

    /// Cuts a partial hypothesis where it starts the utterance over (its first
    /// [`RESTART_WORDS`] words again, case and punctuation aside), past the agreed prefix: on
    /// audio cut mid-speech Whisper sometimes does so with words the token-level guard does
    /// not match ("The security team recommends that the security team recommend...").
    fn cut_restart(&mut self, d: &mut Decoded) -> Result<(), CaptionError> {
        let words: Vec<&str> = d.text.split_whitespace().collect();
        let Some(k) = restart_at(&words) else {
            return Ok(());
        };
        let starts = self.whisper.word_starts(&d.text_tokens);
        let stable = self.seg.as_ref().map_or(0, |s| s.agreement.stable().len());
        // token boundaries must match the words (else the text has odd spacing: leave it)
        if starts.len() != words.len() || starts[k] < stable {
            return Ok(());
        }
        d.text_tokens.truncate(starts[k]);
        d.text = self.whisper.decode_text(&d.text_tokens)?.trim().to_string();
        self.stats.guarded += 1;
        Ok(())
    }

    /// With a diarizer: the frame (index in the open segment) where the segment should be cut
    /// because the speaker changed, judged on the windows past the change horizon.
    fn speaker_change_cut(&mut self) -> Result<Option<usize>, CaptionError> {
        let Some(d) = self.diarizer.as_mut() else {
            return Ok(None);
        };
        let horizon = self.pos.saturating_sub(ms_to_samples(CHANGE_HORIZON_MS));
        let mut target = None;
        while let Some(&e) = d.sent.front() {
            if e > horizon {
                break;
            }
            target = Some(e);
            d.sent.pop_front();
        }
        let Some(seg) = self.seg.as_ref() else {
            return Ok(None);
        };
        if let Some(t) = target {
            let t0 = std::time::Instant::now();
            if !d.worker.wait_until(t) {
                d.worker.sync()?;
            }
            self.stats.diarize_wait_s += t0.elapsed().as_secs_f64();
        }
        let seg_start = seg.start as f64 / SAMPLE_RATE;
        let found = d
            .worker
            .with_labels(|l| l.change_by(seg_start, horizon as f64 / SAMPLE_RATE));
        let Some((k, change)) = found else {
            return Ok(None);
        };
        if d.last_checked == Some(k) {
            return Ok(None);
        }
        d.last_checked = Some(k);
        let Some(change) = change else {
            return Ok(None);
        };
        // the part before the change must be a run of its own
        let n = seg.probs.len();
        let at = ((change.at - seg_start) / FRAME_S).round();
        let min_left = (d.min_run_s / FRAME_S).ceil() as usize;
        let search = (CHANGE_SEARCH_S / FRAME_S) as usize;
        if at < min_left as f64 || at as usize >= n {
            return Ok(None);
        }
        let at = at as usize;
        let lo = at.saturating_sub(search).max(min_left);
        let hi = (at + search)
            .min(n.saturating_sub((CUT_GUARD_S / FRAME_S) as usize))
            .max(lo + 1)
            .min(n);
        if lo >= hi {
            return Ok(None);
        }
        let mut cut = lo;
        for i in lo..hi {
            if seg.probs[i] < seg.probs[cut] {
                cut = i;
            }
        }
        Ok(Some(cut))
    }

    /// Cuts an over-long segment at its quietest recent frame; the rest carries on.
    fn forced_cut(&mut self, out: &mut Vec<CaptionEvent>) -> Result<(), CaptionError> {
        let seg = self.seg.as_ref().expect("segment is open");
        let n = seg.probs.len();
        let lo = n.saturating_sub((CUT_SEARCH_S / FRAME_S) as usize).max(1);
        let hi = n
            .saturating_sub((CUT_GUARD_S / FRAME_S) as usize)
            .max(lo + 1);
        let mut cut = lo;
        for i in lo..hi {
            if seg.probs[i] <= seg.probs[cut] {
                cut = i;
            }
        }
        self.cut_at(cut, out)
    }

    /// Ends the open segment at its frame `cut` (emitting its final); the rest carries on as a
    /// new segment.
    fn cut_at(&mut self, cut: usize, out: &mut Vec<CaptionEvent>) -> Result<(), CaptionError> {
        let mut seg = self.seg.take().expect("segment is open");
        // a cut never reaches back past the latest joint (its final is out; it is a pause)
        let cut = cut.clamp(seg.part_start.max(1), seg.probs.len().max(1));
        let cut_sample = seg.start + (cut * FRAME_SAMPLES) as u64;
        let rest_audio = seg.audio.split_off(cut * FRAME_SAMPLES);
        let rest_probs = seg.probs.split_off(cut);
        let rest_voiced = rest_probs
            .iter()
            .filter(|p| **p >= self.settings.vad_release)
            .count() as u32;
        let last_voiced_end = seg.last_voiced_end;
        seg.last_voiced_end = seg.last_voiced_end.min(cut_sample);
        seg.speculative = None;
        self.finalize(seg, cut_sample, out)?;
        // the rest may hold seconds of speech its words were never shown for: a partial is due
        let mut rest = Segment::open(
            cut_sample,
            rest_audio,
            rest_probs,
            last_voiced_end.max(cut_sample),
            self.pos,
            self.settings.stable_agreement,
        );
        rest.voiced_frames = rest_voiced;
        self.seg = Some(rest);
        Ok(())
    }

    /// Emits the final of `seg`, decoding audio up to absolute sample `end`.
    fn finalize(
        &mut self,
        seg: Segment,
        end: u64,
        out: &mut Vec<CaptionEvent>,
    ) -> Result<(), CaptionError> {
        let voiced_ms = seg.voiced_frames as u64 * FRAME_SAMPLES as u64 * 1000 / 16_000;
        let end = end.clamp(seg.start, seg.end());
        if voiced_ms < self.settings.min_speech_ms as u64 && seg.id.is_none() {
            return Ok(());
        }
        let part_start = seg.start + (seg.part_start * FRAME_SAMPLES) as u64;
        self.record_turns(part_start, &seg.probs[seg.part_start..], end)?;
        let had_spec = seg.speculative.as_ref().is_some_and(|(e, _)| *e == end);
        let mut seg = seg;
        let pre = if had_spec {
            self.stats.speculative_hits += 1;
            seg.speculative.take().map(|(_, d)| d)
        } else {
            None
        };
        let n = (end - seg.start) as usize;
        let n_frames = n.div_ceil(FRAME_SAMPLES).min(seg.probs.len());
        // the audio since the latest joint (none when a cut fell on a joint)
        let (timed, language) = if n_frames > seg.part_start {
            let a = seg.part_start * FRAME_SAMPLES;
            let window = FinalWindow {
                audio: &seg.audio[a..n],
                probs: &seg.probs[seg.part_start..n_frames],
                start: seg.start + a as u64,
                last_voiced_end: seg.last_voiced_end.min(end),
                language: seg.language.as_ref(),
            };
            self.final_words(window, pre, 0)?
        } else {
            (Vec::new(), None)
        };
        self.remember_context(&timed, language.as_deref())?;
        // (a final without words says nothing of the language: the default)
        let language = match language {
            Some(l) if !timed.is_empty() => l,
            _ => "en".to_string(),
        };
        if !timed.is_empty() && self.settings.language == LanguageSetting::Auto {
            // the latest speech sets the lock
            self.locked_language = Some(language.clone());
            if let Some(v) = self.voice_of(part_start, end)? {
                self.voice_languages.insert(v, language.clone());
            }
        }
        if timed.is_empty() && seg.id.is_none() {
            return Ok(());
        }
        self.seg = Some(seg);
        let emitted = self.emit_finals(timed, Some(language), out);
        self.seg = None;
        emitted
    }

    /// Emits the final of the open segment's words `timed`, one final per speaker run (the first
    /// run keeps the segment's id, later runs get new ids): a final never mixes speakers.
    fn emit_finals(
        &mut self,
        timed: Vec<TimedWord>,
        language: Option<String>,
        out: &mut Vec<CaptionEvent>,
    ) -> Result<(), CaptionError> {
        let runs = self.speaker_runs(&timed)?;
        let mut rest = timed;
        for (i, (n, speaker)) in runs.into_iter().enumerate() {
            let tail = rest.split_off(n.min(rest.len()));
            let words = std::mem::replace(&mut rest, tail);
            if i > 0
                && let Some(seg) = self.seg.as_mut()
            {
                // a later speaker run is a segment of its own
                seg.id = None;
                seg.revision = 0;
            }
            let text = words
                .iter()
                .map(|w| w.text.as_str())
                .collect::<Vec<_>>()
                .join(" ");
            let mut ev = self.make_event(EventKind::Final, words, text, language.clone());
            ev.speaker = speaker;
            self.stats.finals += 1;
            out.push(ev);
        }
        Ok(())
    }

    /// Appends a final's words to the decoding context (keeping the last
    /// [`MAX_CONTEXT_TOKENS`]); a final in another language starts a new context.
    fn remember_context(
        &mut self,
        words: &[TimedWord],
        language: Option<&str>,
    ) -> Result<(), CaptionError> {
        if !self.settings.condition_on_previous_text || words.is_empty() {
            return Ok(());
        }
        if self.context_language.as_deref() != language {
            self.context.clear();
            self.context_language = language.map(str::to_string);
        }
        let text: String = words.iter().map(|w| format!(" {}", w.text)).collect();
        self.context.extend(self.whisper.encode_text(&text)?);
        let excess = self.context.len().saturating_sub(MAX_CONTEXT_TOKENS);
        self.context.drain(..excess);
        Ok(())
    }

    /// With diarization: the speaker turns of the voiced frames of a segment starting at
    /// absolute sample `start` (VAD probabilities `probs`), up to sample `end`.
    fn record_turns(&mut self, start: u64, probs: &[f32], end: u64) -> Result<(), CaptionError> {
        let release = self.settings.vad_release;
        let Some(d) = self.diarizer.as_mut() else {
            return Ok(());
        };
        let t = std::time::Instant::now();
        d.worker.sync()?;
        self.stats.diarize_wait_s += t.elapsed().as_secs_f64();
        let frame_s = FRAME_SAMPLES as f64 / SAMPLE_RATE;
        let frames = ((end.saturating_sub(start)) as usize / FRAME_SAMPLES).min(probs.len());
        let voiced: Vec<(f64, Option<usize>)> = d.worker.with_labels(|l| {
            (0..frames)
                .filter(|&i| probs[i] >= release)
                .map(|i| {
                    let t0 = (start + (i * FRAME_SAMPLES) as u64) as f64 / SAMPLE_RATE;
                    (t0, l.speaker_at(t0 + frame_s / 2.0))
                })
                .collect()
        });
        // frames before the first window of the track take the first speaker known
        let first = voiced.iter().find_map(|(_, s)| *s);
        let mut last = first;
        for (t0, s) in voiced {
            let Some(s) = s.or(last) else { continue };
            last = Some(s);
            let label = d.names.commit(s);
            match d.turns.last_mut() {
                Some(turn) if turn.speaker == label && t0 - turn.end <= frame_s + 1e-9 => {
                    turn.end = t0 + frame_s
                }
                _ => d.turns.push(Turn {
                    start: t0,
                    end: t0 + frame_s,
                    speaker: label,
                }),
            }
        }
        Ok(())
    }

    /// Cuts the words of a final into speaker runs: `(word count, label)` per run, in order.
    /// Without diarization, one run of every word and no label.
    fn speaker_runs(
        &mut self,
        timed: &[TimedWord],
    ) -> Result<Vec<(usize, Option<String>)>, CaptionError> {
        let Some(d) = self.diarizer.as_mut() else {
            return Ok(vec![(timed.len(), None)]);
        };
        let t = std::time::Instant::now();
        d.worker.sync()?;
        self.stats.diarize_wait_s += t.elapsed().as_secs_f64();
        let stats = d.worker.stats();
        self.stats.diarize_s = stats.embed_s;
        self.stats.diarize_windows = stats.windows;
        let spans: Vec<(f64, f64)> = timed.iter().map(|w| (w.start, w.end)).collect();
        let speakers: Vec<Option<usize>> = d.worker.with_labels(|l| {
            spans
                .iter()
                .map(|(a, b)| l.speaker_at((a + b) / 2.0))
                .collect()
        });
        let runs = speaker_runs(&spans, &speakers, d.min_run_s);
        if runs.is_empty() {
            return Ok(vec![(timed.len(), None)]);
        }
        Ok(runs
            .into_iter()
            .map(|r| (r.words.len(), r.speaker.map(|s| d.names.commit(s))))
            .collect())
    }

    /// Decodes a final window (or takes its early decode) and times its words. A window whose
    /// text was dropped because the decoder looped (repetition or compression-ratio guard) is
    /// split at its quietest frame near the middle and each half decoded on its own, down to
    /// [`MIN_SPLIT_S`]: shorter windows rarely loop, and this loses less speech than dropping
    /// the whole window.
    fn final_words(
        &mut self,
        window: FinalWindow<'_>,
        pre: Option<Decoded>,
        depth: u32,
    ) -> Result<(Vec<TimedWord>, Option<String>), CaptionError> {
        let FinalWindow {
            audio,
            probs,
            start,
            last_voiced_end,
            language: segment_language,
        } = window;
        let decoded = match pre {
            Some(d) => d,
            None => {
                let opts =
                    self.final_options(start, start + audio.len() as u64, segment_language)?;
                let t = std::time::Instant::now();
                let d = self.whisper.transcribe(audio, &opts);
                self.stats.asr_s += t.elapsed().as_secs_f64();
                d?
            }
        };
        if !decoded.guards.is_empty() {
            self.stats.guarded += 1;
            tracing::debug!(
                track = %self.track,
                from_s = start as f64 / SAMPLE_RATE,
                to_s = (start + audio.len() as u64) as f64 / SAMPLE_RATE,
                language = ?decoded.language,
                guards = ?decoded.guards,
                text = %decoded.text,
                "final decode guarded"
            );
        }
        let window_s = audio.len() as f64 / SAMPLE_RATE;
        tracing::trace!(
            track = %self.track,
            from_s = start as f64 / SAMPLE_RATE,
            window_s,
            avg_logprob = decoded.avg_logprob,
            pieces = ?decoded.pieces,
            "final decode"
        );
        // a loop the guard could cut keeps its text; a window whose text was dropped is split
        let looped = decoded.text.is_empty()
            && decoded
                .guards
                .iter()
                .any(|g| matches!(g, Guard::RepetitionLoop | Guard::CompressionRatio));
        if looped && depth < MAX_SPLIT_DEPTH && window_s >= 2.0 * MIN_SPLIT_S && probs.len() >= 4 {
            let (lo, hi) = (
                probs.len() / 4,
                (3 * probs.len() / 4).max(probs.len() / 4 + 1),
            );
            let cut = (lo..hi)
                .min_by(|a, b| probs[*a].total_cmp(&probs[*b]))
                .unwrap_or(lo);
            let cut_sample = cut * FRAME_SAMPLES;
            let mid = start + cut_sample as u64;
            let left_window = FinalWindow {
                audio: &audio[..cut_sample],
                probs: &probs[..cut],
                start,
                last_voiced_end: last_voiced_end.min(mid),
                language: segment_language,
            };
            let (mut left, left_lang) = self.final_words(left_window, None, depth + 1)?;
            let right_window = FinalWindow {
                audio: &audio[cut_sample..],
                probs: &probs[cut..],
                start: mid,
                last_voiced_end: last_voiced_end.max(mid),
                language: segment_language,
            };
            let (right, right_lang) = self.final_words(right_window, None, depth + 1)?;
            left.extend(right);
            return Ok((left, right_lang.or(left_lang)));
        }
        let origin = start as f64 / SAMPLE_RATE;
        let voiced = voiced_spans(probs, self.settings.vad_release, origin, FRAME_S);
        let speech_t0 = voiced.first().map_or(origin, |v| v.0);
        let speech_t1 = (last_voiced_end as f64 / SAMPLE_RATE).max(speech_t0);
        let mut timed: Vec<TimedWord> = Vec::new();
        let mut prev_end: Option<f64> = None;
        let n_pieces = decoded.pieces.len();
        for (i, piece) in decoded.pieces.iter().enumerate() {
            let words: Vec<&str> = piece.text.split_whitespace().collect();
            let p0 = piece.start.map(|t| origin + (t as f64).min(window_s));
            let p1 = piece.end.map(|t| origin + (t as f64).min(window_s));
            let t0 = p0
                .or(prev_end)
                .unwrap_or(speech_t0)
                .max(prev_end.unwrap_or(f64::MIN));
            let t1 = match p1 {
                // the window ends with the speech: a last timestamp before the last voiced
                // frame is the model's rounding (base models often round it to whole seconds)
                Some(e) if i + 1 == n_pieces => e.max(speech_t1),
                Some(e) => e,
                None if i + 1 == n_pieces => speech_t1,
                None => t0 + TIMESTAMP_STEP_S as f64,
            }
            .max(t0);
            // keep the words on the voiced part of the piece
            let a = t0.max(speech_t0).min(t1);
            let b = t1.min(speech_t1).max(a);
            timed.extend(spread_words(&words, a, b, &voiced));
            prev_end = Some(t1);
        }
        Ok((timed, decoded.language))
    }

    /// Builds the next event of the open segment (allocating its id on first use).
    fn make_event(
        &mut self,
        kind: EventKind,
        words: Vec<TimedWord>,
        stable_text: String,
        language: Option<String>,
    ) -> CaptionEvent {
        let seg = self.seg.as_mut().expect("segment is open");
        let id = match &seg.id {
            Some(id) => id.clone(),
            None => {
                self.segments += 1;
                let id = format!("s{:04}", self.segments);
                seg.id = Some(id.clone());
                id
            }
        };
        let revision = seg.revision;
        seg.revision += 1;
        let seg_start = seg.start as f64 / SAMPLE_RATE;
        let text = words
            .iter()
            .map(|w| w.text.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        let start = words.first().map_or(seg_start, |w| w.start);
        let end = words.last().map_or(start, |w| w.end);
        let seq = self.seq;
        self.seq += 1;
        CaptionEvent {
            seq,
            kind,
            segment_id: id,
            revision,
            track: self.track.clone(),
            speaker: None,
            language,
            stable_text: if kind == EventKind::Final {
                text.clone()
            } else {
                stable_text
            },
            text,
            start,
            end,
            emitted_at: round_ms(if self.audio_clock {
                self.pos as f64 / SAMPLE_RATE
            } else {
                (self.clock)()
            }),
            words: words
                .into_iter()
                .map(|w| Word {
                    w: w.text,
                    start: w.start,
                    end: w.end,
                    speaker: None,
                })
                .collect(),
        }
    }
}

/// Commits to the agreed prefix the words of the segment's latest partial that were shown
/// and whose audio ended at least `window_ms` before `now_s` (seconds): from then on the decoder
/// must continue them, so a word is never rewritten by a partial once it is older than the
/// window, even if it was still fresh when it was shown. Never committed: the hypothesis's
/// last word (no word has started after it: the decoder may still lengthen it, "Say" becoming
/// "Sayings"), and the words from where the hypothesis seems to start the utterance over (see
/// [`restart_begun`]), which a later partial may have to cut. Nothing happens unless the
/// hypothesis still begins with the words shown and its tokens map onto its words.
fn settle_shown(
    seg: &mut Segment,
    whisper: &Whisper,
    now_s: f64,
    window_ms: u32,
) -> Result<(), CaptionError> {
    if window_ms == 0 || seg.shown.is_empty() {
        return Ok(());
    }
    let window_s = window_ms as f64 / 1000.0;
    let settled = seg
        .shown
        .iter()
        .take_while(|w| now_s - w.end >= window_s)
        .count();
    let h = &seg.hypothesis;
    let words: Vec<&str> = h.words.iter().map(String::as_str).collect();
    let settled = settled
        .min(words.len().saturating_sub(1))
        .min(restart_begun(&words).unwrap_or(usize::MAX));
    let stable_words = whisper
        .decode_text(seg.agreement.stable())?
        .split_whitespace()
        .count();
    if settled <= stable_words || !seg.shown.iter().zip(&h.words).all(|(w, h)| w.text == *h) {
        return Ok(());
    }
    let starts = whisper.word_starts(&h.text_tokens);
    if starts.len() != h.words.len() {
        return Ok(());
    }
    seg.agreement.commit(&h.text_tokens[..starts[settled]]);
    Ok(())
}

/// At a partial language switch: how many of the shown words were read long enough ago to stay
/// (past the revision window, as [`settle_shown`] keeps them) and the frame to decode the new
/// language from, the longest pause from just before the last of them ends to
/// [`JOINT_GUARD_S`] before now. None when no word is settled, no audio is left after it, or
/// the partials heard the old language fewer times than `stable_agreement`.
fn switch_trim_at(seg: &Segment, now_s: f64, settings: &StreamSettings) -> Option<(usize, usize)> {
    // a language heard by fewer hypotheses than a word needs to be stable may be the
    // detector's first guess on little audio: its words are rewritten in the new one
    if settings.revision_window_ms == 0 || seg.language_run < settings.stable_agreement {
        return None;
    }
    let window_s = settings.revision_window_ms as f64 / 1000.0;
    let settled = seg
        .shown
        .iter()
        .take_while(|w| now_s - w.end >= window_s)
        .count();
    let last = seg.shown.get(settled.checked_sub(1)?)?;
    let start_s = seg.start as f64 / SAMPLE_RATE;
    let frame = |t: f64| (((t - start_s) / FRAME_S).max(0.0) as usize).min(seg.probs.len());
    let lo = frame(last.end - SWITCH_TRIM_BEFORE_S).max(seg.view_start + 1);
    let hi = match seg.shown.get(settled) {
        Some(next) => frame(next.end),
        None => seg.probs.len(),
    }
    .min(
        seg.probs
            .len()
            .saturating_sub((JOINT_GUARD_S / FRAME_S) as usize),
    );
    (lo < hi).then(|| {
        (
            settled,
            pause_in(&seg.probs[lo..hi], settings.vad_release) + lo,
        )
    })
}

/// `words` in lower case, letters, digits and apostrophes only.
fn normalized(words: &[&str]) -> Vec<String> {
    words
        .iter()
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric() || *c == '\'' || *c == '’')
                .flat_map(char::to_lowercase)
                .collect()
        })
        .collect()
}

/// Index of the first word of a restart of `words`: the earliest position from which its
/// first [`RESTART_WORDS`] words come again (compared [`normalized`]).
fn restart_at(words: &[&str]) -> Option<usize> {
    let norm = normalized(words);
    let head = norm.get(..RESTART_WORDS)?;
    if head.iter().any(String::is_empty) {
        return None;
    }
    (RESTART_WORDS..=norm.len() - RESTART_WORDS).find(|&k| norm[k..k + RESTART_WORDS] == *head)
}

/// Index of the first word of what may be the start of a restart of `words`, too short yet
/// for [`restart_at`]: the earliest position from which the last words (fewer than
/// [`RESTART_WORDS`]) repeat its first ones (compared [`normalized`]).
fn restart_begun(words: &[&str]) -> Option<usize> {
    let norm = normalized(words);
    let n = norm.len();
    (n.saturating_sub(RESTART_WORDS - 1).max(1)..n)
        .find(|&k| !norm[k].is_empty() && norm[k..] == norm[..n - k])
}

/// Index of the frame to cut at in `probs`: the middle of the longest run of frames under
/// `release` (the latest of equally long runs), else the quietest frame (the latest of equals).
fn pause_in(probs: &[f32], release: f32) -> usize {
    let mut best: Option<(usize, usize)> = None; // (length, middle)
    let mut run_start = None;
    for i in 0..=probs.len() {
        let quiet = i < probs.len() && probs[i] < release;
        match (quiet, run_start) {
            (true, None) => run_start = Some(i),
            (false, Some(s)) => {
                let len = i - s;
                if best.is_none_or(|(l, _)| len >= l) {
                    best = Some((len, s + len / 2));
                }
                run_start = None;
            }
            _ => {}
        }
    }
    if let Some((_, mid)) = best {
        return mid;
    }
    let mut q = 0;
    for (i, p) in probs.iter().enumerate() {
        if *p <= probs[q] {
            q = i;
        }
    }
    q
}

fn ms_to_samples(ms: u32) -> u64 {
    ms as u64 * 16
}

fn round_ms(t: f64) -> f64 {
    (t * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::{
        FRAME_S, FRAME_SAMPLES, Segment, StreamSettings, TimedWord, pause_in, restart_at,
        restart_begun, switch_trim_at,
    };

    #[test]
    fn a_hypothesis_starting_over_is_found() {
        let w = |s: &'static str| s.split_whitespace().collect::<Vec<_>>();
        assert_eq!(
            restart_at(&w(
                "The security team recommends that the security team recommend the"
            )),
            Some(5)
        );
        assert_eq!(
            restart_at(&w(
                "The microphones worked, but the microphones worked. But"
            )),
            Some(4)
        );
        // two words again is not a restart; nor is a repetition elsewhere in the text
        assert_eq!(restart_at(&w("we need we need to act")), None);
        assert_eq!(restart_at(&w("so it is what it is what it is")), None);
        assert_eq!(restart_at(&w("a b")), None);
        assert_eq!(restart_at(&w("")), None);
        // punctuation-only words never match
        assert_eq!(restart_at(&w("- - - a - - -")), None);
    }

    #[test]
    fn a_restart_that_may_be_beginning_is_found() {
        let w = |s: &'static str| s.split_whitespace().collect::<Vec<_>>();
        assert_eq!(restart_begun(&w("That is, exactly why. That is")), Some(4));
        assert_eq!(restart_begun(&w("The budget is the")), Some(3));
        // three words again is a restart proper, cut by restart_at
        assert_eq!(restart_begun(&w("we need to act we need to")), None);
        assert_eq!(restart_begun(&w("we need to act now")), None);
        assert_eq!(restart_begun(&w("? ?")), None);
        assert_eq!(restart_begun(&w("word")), None);
        assert_eq!(restart_begun(&w("")), None);
    }

    #[test]
    fn a_language_switch_keeps_the_words_read_and_trims_at_the_pause_after_them() {
        // 3 s from sample 0: speech, a 0.32 s pause from 1.28 s, speech again
        let n = (3.0 / FRAME_S) as usize;
        let probs: Vec<f32> = (0..n)
            .map(|i| if (40..50).contains(&i) { 0.05 } else { 0.9 })
            .collect();
        let mut seg = Segment::open(0, vec![0.0; n * FRAME_SAMPLES], probs, 0, 0, 2);
        let word = |text: &str, start: f64, end: f64| TimedWord {
            text: text.into(),
            start,
            end,
        };
        seg.shown = vec![
            word("Les", 0.1, 0.5),
            word("membres", 0.5, 1.25),
            word("de", 1.6, 2.2),
        ];
        let settings = StreamSettings::default(); // revision window 300 ms, agreement 2
        // a language heard by one hypothesis only is a first guess: rewritten
        seg.language_run = 1;
        assert_eq!(switch_trim_at(&seg, 2.4, &settings), None);
        seg.language_run = 2;
        // at 2.4 s the first two words are read; the trim falls in the pause after them
        assert_eq!(switch_trim_at(&seg, 2.4, &settings), Some((2, 45)));
        // at 0.7 s nothing is read yet
        assert_eq!(switch_trim_at(&seg, 0.7, &settings), None);
        // no revision window: every word may change
        let off = StreamSettings {
            revision_window_ms: 0,
            ..Default::default()
        };
        assert_eq!(switch_trim_at(&seg, 2.4, &off), None);
    }

    #[test]
    fn a_cut_falls_in_the_longest_pause() {
        let (v, q) = (0.9, 0.1);
        // a 2-frame pause, then a 4-frame one: the middle of the longer
        let probs = [v, q, q, v, v, q, q, q, q, v, v];
        assert_eq!(pause_in(&probs, 0.35), 7);
        // equally long pauses: the latest
        let probs = [v, q, q, v, q, q, v];
        assert_eq!(pause_in(&probs, 0.35), 5);
        // a pause running to the end of the range counts
        let probs = [v, q, v, v, q, q, q];
        assert_eq!(pause_in(&probs, 0.35), 5);
        // no frame under the release probability: the quietest (the latest of equals)
        let probs = [0.9, 0.6, 0.8, 0.6, 0.95];
        assert_eq!(pause_in(&probs, 0.35), 3);
    }
}
