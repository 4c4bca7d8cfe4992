//! Whisper encoder/decoder (ONNX, int8) with a self-attention KV cache and greedy decoding.
//!
//! One call to [`Whisper::transcribe`] decodes one window of audio (at most 30 s):
//! mel → encoder (cost grows with the audio length: the context is truncated to the audio plus
//! [`CONTEXT_PAD_FRAMES`]) → optional language detection (one decoder step) → greedy decoding with
//! the model's suppress lists, optional timestamp rules and hallucination guards (repetition loop,
//! compression ratio, no-speech probability).
//!
//! Latency model (whisper-base int8, one core): mel ~0.5 ms per second of audio (see
//! [`super::mel`]), encoder ~10-20 ms per second of audio, the prompt step (previous text,
//! start-of-transcript sequence, forced prefix: one batched pass) ~10-20 ms, then ~5-10 ms per
//! token. The decoder is loaded edited by [`logit_rows`] so that the vocabulary projection, half
//! of a step's multiply-adds, runs only for the rows read (the start-of-transcript row and the
//! last one), not for every prompt position.

use std::io::Write as _;
use std::sync::Arc;

use ort::session::Session;
use ort::value::{DynValue, Tensor, TensorRef};
use tokenizers::Tokenizer;

use super::config::WhisperConfig;
use super::logit_rows;
use super::mel::{HOP, MAX_FRAMES, MelFrontend};
use super::{AsrError, ModelFiles};
use crate::onnx::{self, OnnxError};

/// Fewest decoded tokens that count as a copy of the context (shorter phrases are often
/// really said again).
const ECHO_MIN_TOKENS: usize = 4;
/// Decoded tokens compared with the context.
const ECHO_PROBE_TOKENS: usize = 6;
/// Mel frames of silence appended after the audio in the truncated encoder context (1 s).
pub const CONTEXT_PAD_FRAMES: usize = 100;
/// Seconds per timestamp token.
pub const TIMESTAMP_STEP_S: f32 = 0.02;
/// Latest first timestamp allowed (whisper's `max_initial_timestamp`), in timestamp steps.
const MAX_INITIAL_TIMESTAMP_STEPS: u32 = 50;
/// Token budget: this many tokens per second of audio, plus [`TOKENS_BASE`].
const TOKENS_PER_SECOND: f32 = 8.0;
const TOKENS_BASE: usize = 10;
/// Longest repeated token run (k-gram) checked by the loop guard.
const MAX_LOOP_K: usize = 64;
/// Average token log-probability under which a decode counts as failed (Whisper's
/// `logprob_threshold`), the default of [`DecodeOptions::logprob_threshold`].
pub const LOGPROB_THRESHOLD: f32 = -1.0;
/// Most tokens of preceding text given as context (Whisper allows up to half its text context,
/// 223; a sentence or two is what helps, and every token lengthens each decoder step).
pub const MAX_CONTEXT_TOKENS: usize = 96;

/// Probability English must be detected with to replace another preferred language on audio
/// shorter than [`SHORT_AUDIO_S`]: Whisper's identification of a second or two of speech
/// leans towards English (speech in another language is often heard as English with 0.6-0.9,
/// English as another language hardly ever), so hearing English there must be surer.
pub const ENGLISH_SWITCH_CONFIDENCE: f32 = 0.95;
/// Audio shorter than this (seconds) gets the English-leaning correction above.
pub const SHORT_AUDIO_S: f32 = 2.5;

/// How the decoder chooses the language.
#[derive(Debug, Clone, PartialEq)]
pub enum Language {
    /// Use this language code (`en`, `fr`, ...).
    Fixed(String),
    /// Detect it from the language token, choosing among the codes of `among` (probabilities
    /// renormalised over them; empty: every language the model knows). When `prefer` is set,
    /// it is kept unless another language is detected with at least `switch_confidence`
    /// probability ([`ENGLISH_SWITCH_CONFIDENCE`] for English on short audio).
    Detect {
        prefer: Option<String>,
        switch_confidence: f32,
        among: Vec<String>,
    },
}

/// What to decode and how.
#[derive(Debug, Clone)]
pub struct DecodeOptions {
    /// Language of the audio (ignored by English-only models).
    pub language: Language,
    /// Predict timestamp tokens (segment times inside the window).
    pub timestamps: bool,
    /// Tokens forced after the prompt (an already agreed prefix); decoding continues after them.
    pub prefix: Vec<u32>,
    /// Text tokens of the speech just before this audio, given after `<|startofprev|>` as
    /// Whisper's conditioning on previous text (spelling, names and language stay consistent
    /// across segments). Only the last [`MAX_CONTEXT_TOKENS`] are used. Empty: none.
    pub context: Vec<u32>,
    /// Language of `context`: with a multilingual model the context is only given when the
    /// window is decoded in this language (`None`: always).
    pub context_language: Option<String>,
    /// Compression ratio above which the text is treated as a hallucination.
    pub compression_ratio_threshold: f32,
    /// No-speech probability above which (with a low average log-probability) the window is
    /// treated as silence.
    pub no_speech_threshold: f32,
    /// Average log-probability below which a high no-speech probability means silence.
    pub logprob_threshold: f32,
    /// Token budget per second of audio (plus a small constant).
    pub tokens_per_second: f32,
    /// Stop when the last `n` tokens already occurred earlier in the text (and drop them):
    /// on audio cut mid-speech the decoder tends to start the utterance over. `None`: off.
    pub stop_on_repeated_ngram: Option<usize>,
    /// End of text is not allowed before this many text tokens (prefix included): the caller
    /// knows there is more speech than an earlier decode transcribed. 0: no constraint.
    pub min_text_tokens: usize,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            language: Language::Fixed("en".into()),
            timestamps: false,
            prefix: Vec::new(),
            context: Vec::new(),
            context_language: None,
            compression_ratio_threshold: 2.4,
            no_speech_threshold: 0.6,
            logprob_threshold: LOGPROB_THRESHOLD,
            tokens_per_second: TOKENS_PER_SECOND,
            stop_on_repeated_ngram: None,
            min_text_tokens: 0,
        }
    }
}

/// Why a decoded text was rejected or cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// The decoder repeated a token sequence; the repetition was cut.
    RepetitionLoop,
    /// The text compresses too well: a hallucinated loop. The text was dropped.
    CompressionRatio,
    /// The model judged the window to hold no speech. The text was dropped.
    NoSpeech,
    /// The token budget ran out.
    TokenBudget,
    /// The decoder repeated the context instead of transcribing; decoded again without it
    /// (with a forced prefix, which may hold the copy, the caller decodes again).
    ContextEcho,
}

/// A stretch of text with window-relative times from timestamp tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct TimedText {
    pub start: Option<f32>,
    pub end: Option<f32>,
    pub text: String,
}

/// Result of decoding one window.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// Text tokens (timestamps removed), including the forced prefix.
    pub text_tokens: Vec<u32>,
    /// Full text of the window (empty when a guard dropped it).
    pub text: String,
    /// Text split at timestamp tokens (one element without times when timestamps are off).
    pub pieces: Vec<TimedText>,
    /// Language code used.
    pub language: Option<String>,
    /// Probability of the detected language (1.0 when fixed); when a preferred language was kept,
    /// the probability of the other language that was detected.
    pub language_prob: f32,
    pub no_speech_prob: f32,
    pub avg_logprob: f32,
    /// Guards that fired.
    pub guards: Vec<Guard>,
}

/// A loaded Whisper model.
pub struct Whisper {
    name: String,
    config: WhisperConfig,
    mel: MelFrontend,
    encoder: Session,
    decoder: Session,
    /// Whether the decoder takes [`logit_rows::ROWS_INPUT`] (see [`logit_rows`]).
    decoder_rows: bool,
    tokenizer: Arc<Tokenizer>,
    logits: Vec<f32>,
    first_row: Vec<f32>,
}

const ENC: &str = "whisper encoder";
const DEC: &str = "whisper decoder";

impl Whisper {
    /// Reads the tokenizer of `files`. Immutable once read: share it between the instances of a
    /// model ([`Whisper::load_with`]), it weighs tens of megabytes and ~0.1 s to parse.
    pub fn tokenizer(files: &ModelFiles) -> Result<Arc<Tokenizer>, AsrError> {
        Tokenizer::from_file(&files.tokenizer)
            .map(Arc::new)
            .map_err(|e| AsrError::Tokenizer(format!("{}: {e}", files.tokenizer.display())))
    }

    /// Loads a model from its files with a tokenizer already read from them.
    pub fn load_with(
        name: &str,
        files: &ModelFiles,
        tokenizer: Arc<Tokenizer>,
    ) -> Result<Self, AsrError> {
        let config = WhisperConfig::load(&files.config)?;
        if tokenizer.get_vocab_size(true) > config.n_vocab {
            return Err(AsrError::Config(format!(
                "{}: tokenizer has {} tokens, model {}",
                files.tokenizer.display(),
                tokenizer.get_vocab_size(true),
                config.n_vocab
            )));
        }
        let (decoder, decoder_rows) = onnx::edited_session(
            &files.decoder,
            logit_rows::select_logit_rows,
            "the decoder computes logits for every position",
        )?;
        Ok(Self {
            name: name.to_string(),
            mel: MelFrontend::load(&files.mel)?,
            encoder: onnx::session(&files.encoder)?,
            decoder,
            decoder_rows,
            tokenizer,
            logits: vec![0.0; config.n_vocab],
            first_row: Vec::new(),
            config,
        })
    }

    /// Model name (`whisper-base`, ...).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the model can transcribe other languages than English.
    pub fn multilingual(&self) -> bool {
        self.config.multilingual
    }

    /// Whether `code` is a language this model knows.
    pub fn knows_language(&self, code: &str) -> bool {
        if self.config.multilingual {
            self.config.language_token(code).is_some()
        } else {
            code == "en"
        }
    }

    /// Token ids of `text` (no special tokens), for prompts and tests.
    pub fn encode_text(&self, text: &str) -> Result<Vec<u32>, AsrError> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| AsrError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `tokens` (special tokens skipped).
    pub fn decode_text(&self, tokens: &[u32]) -> Result<String, AsrError> {
        let eot = self.config.special_tokens.eot;
        let ids: Vec<u32> = tokens.iter().copied().filter(|t| *t < eot).collect();
        self.tokenizer
            .decode(&ids, true)
            .map_err(|e| AsrError::Tokenizer(e.to_string()))
    }

    /// Whether token `t` starts a new word (its text begins with a space).
    pub fn starts_word(&self, t: u32) -> bool {
        self.tokenizer
            .id_to_token(t)
            .is_some_and(|s| s.starts_with('\u{120}'))
    }

    /// Index of the first token of each word of `tokens` (the first token always starts one).
    pub fn word_starts(&self, tokens: &[u32]) -> Vec<usize> {
        (0..tokens.len())
            .filter(|&i| i == 0 || self.starts_word(tokens[i]))
            .collect()
    }

    /// The most probable language of `audio` among `among` (every language the model knows
    /// when empty) and its probability renormalised over them: one encoder pass and one
    /// decoder step. An English-only model answers `en` with certainty.
    pub fn identify_language(
        &mut self,
        audio: &[f32],
        among: &[String],
    ) -> Result<(String, f32), AsrError> {
        if !self.config.multilingual {
            return Ok(("en".into(), 1.0));
        }
        let (cross_k, cross_v) = self.encode_audio(audio)?;
        self.detect_language(&cross_k, &cross_v, among)
    }

    /// Mel and encoder over `audio` (the context truncated to it plus [`CONTEXT_PAD_FRAMES`]).
    fn encode_audio(&mut self, audio: &[f32]) -> Result<(DynValue, DynValue), AsrError> {
        let audio_frames = audio.len().div_ceil(HOP);
        let n_frames = ((audio_frames + CONTEXT_PAD_FRAMES).div_ceil(2) * 2).min(MAX_FRAMES);
        let mel = self.mel.compute(audio, n_frames)?;
        self.encode(&mel, n_frames)
    }

    /// Decodes `audio` (16 kHz mono, at most 30 s; longer audio is cut).
    pub fn transcribe(&mut self, audio: &[f32], opts: &DecodeOptions) -> Result<Decoded, AsrError> {
        let (cross_k, cross_v) = self.encode_audio(audio)?;
        let audio_s = audio.len() as f32 / 16_000.0;

        let (language, language_prob) = if !self.config.multilingual {
            (None, 1.0)
        } else {
            match &opts.language {
                Language::Fixed(code) => (Some(code.clone()), 1.0),
                Language::Detect {
                    prefer,
                    switch_confidence,
                    among,
                } => {
                    let (code, p) = self.detect_language(&cross_k, &cross_v, among)?;
                    tracing::trace!(
                        audio_s,
                        detected = %code,
                        p,
                        prefer = ?prefer,
                        "language decision"
                    );
                    let chosen =
                        choose_language(code, p, prefer.as_ref(), *switch_confidence, audio_s);
                    (Some(chosen), p)
                }
            }
        };
        let context = &opts.context[opts.context.len().saturating_sub(MAX_CONTEXT_TOKENS)..];
        let same_language = !self.config.multilingual
            || opts.context_language.is_none()
            || opts.context_language == language;
        let context = if same_language { context } else { &[] };
        let mut first = self.decode(
            audio_s,
            &cross_k,
            &cross_v,
            (&language, language_prob),
            context,
            opts,
        )?;
        if context.is_empty() || !context_echo(&first.text_tokens, context) {
            return Ok(first);
        }
        if !opts.prefix.is_empty() {
            // the forced prefix may hold the copy: the caller, who chose it, decodes again
            first.guards.insert(0, Guard::ContextEcho);
            return Ok(first);
        }
        // the decoder copied the previous text instead of hearing the audio (Whisper does this
        // on speech it cannot make out, or in another language): decode again without it
        tracing::debug!(text = %first.text, "decoder repeated its context; decoding again without it");
        let mut again = self.decode(
            audio_s,
            &cross_k,
            &cross_v,
            (&language, language_prob),
            &[],
            opts,
        )?;
        again.guards.insert(0, Guard::ContextEcho);
        Ok(again)
    }

    /// Decodes the encoded audio (`cross_k`, `cross_v`) in `language`, after `context`.
    fn decode(
        &mut self,
        audio_s: f32,
        cross_k: &DynValue,
        cross_v: &DynValue,
        (language, language_prob): (&Option<String>, f32),
        context: &[u32],
        opts: &DecodeOptions,
    ) -> Result<Decoded, AsrError> {
        let st = self.config.special_tokens.clone();
        let mut prompt = Vec::new();
        if !context.is_empty() {
            prompt.push(st.startofprev);
            prompt.extend(context.iter().copied().filter(|t| *t < st.eot));
        }
        // the row whose prediction holds the no-speech probability
        let sot_row = prompt.len();
        prompt.push(st.sot);
        if let Some(code) = language {
            let tok = self
                .config
                .language_token(code)
                .ok_or_else(|| AsrError::UnknownLanguage(code.clone()))?;
            prompt.push(tok);
            prompt.push(st.transcribe);
        }
        if !opts.timestamps {
            prompt.push(st.notimestamps);
        }
        prompt.extend_from_slice(&opts.prefix);

        let budget = ((audio_s * opts.tokens_per_second.max(1.0)) as usize
            + TOKENS_BASE
            + opts.prefix.len())
        .min(self.config.n_text_ctx.saturating_sub(prompt.len() + 1));
        let max_ts_steps = (audio_s / TIMESTAMP_STEP_S).ceil() as u32;

        let mut guards = Vec::new();
        let mut generated: Vec<u32> = opts.prefix.clone();
        let mut sum_logprob = 0.0f64;
        let mut sampled = 0usize;
        let mut no_speech_prob = 0.0f32;

        let l = self.config.n_text_layers;
        let d = self.config.d_model;
        let mut self_k: DynValue = Tensor::from_array(([l, 1, 0, d], Vec::<f32>::new()))
            .map_err(onnx::run_err(DEC))?
            .into_dyn();
        let mut self_v: DynValue = Tensor::from_array(([l, 1, 0, d], Vec::<f32>::new()))
            .map_err(onnx::run_err(DEC))?
            .into_dyn();
        let mut step_tokens: Vec<i64> = prompt.iter().map(|t| *t as i64).collect();
        let mut first_step = true;
        loop {
            if generated.len() - opts.prefix.len() >= budget {
                guards.push(Guard::TokenBudget);
                break;
            }
            let (new_k, new_v) = self.decoder_step(
                &step_tokens,
                &self_k,
                &self_v,
                cross_k,
                cross_v,
                first_step.then_some(sot_row),
            )?;
            self_k = new_k;
            self_v = new_v;
            if first_step {
                no_speech_prob = softmax_at(&self.first_row, st.no_speech as usize);
            }
            let first_sampled = generated.len() == opts.prefix.len();
            self.mask(
                opts.timestamps,
                &generated[opts.prefix.len()..],
                first_sampled && opts.prefix.is_empty(),
                max_ts_steps,
            );
            if generated.iter().filter(|t| **t < st.eot).count() < opts.min_text_tokens {
                self.logits[st.eot as usize] = f32::NEG_INFINITY;
            }
            let (tok, logprob) = argmax_logprob(&self.logits);
            first_step = false;
            if tok == st.eot {
                sum_logprob += logprob as f64;
                sampled += 1;
                break;
            }
            sum_logprob += logprob as f64;
            sampled += 1;
            generated.push(tok);
            let cut = repetition_cut(&generated[opts.prefix.len()..])
                .or_else(|| text_loop_cut(&generated[opts.prefix.len()..], st.eot));
            if let Some(cut) = cut {
                generated.truncate(opts.prefix.len() + cut);
                guards.push(Guard::RepetitionLoop);
                break;
            }
            if let Some(n) = opts.stop_on_repeated_ngram
                && let Some(cut) = repeated_ngram_cut(&generated, n)
                && cut >= opts.prefix.len()
            {
                generated.truncate(cut);
                guards.push(Guard::RepetitionLoop);
                break;
            }
            step_tokens.clear();
            step_tokens.push(tok as i64);
        }
        let avg_logprob = if sampled > 0 {
            (sum_logprob / sampled as f64) as f32
        } else {
            0.0
        };

        let pieces = self.pieces(&generated, &st)?;
        let text_tokens: Vec<u32> = generated.iter().copied().filter(|t| *t < st.eot).collect();
        let mut text = self.decode_text(&text_tokens)?.trim().to_string();
        let mut pieces = pieces;
        if no_speech_prob > opts.no_speech_threshold && avg_logprob < opts.logprob_threshold {
            guards.push(Guard::NoSpeech);
        } else if compression_ratio(&text) > opts.compression_ratio_threshold {
            guards.push(Guard::CompressionRatio);
        }
        if guards
            .iter()
            .any(|g| matches!(g, Guard::NoSpeech | Guard::CompressionRatio))
        {
            text.clear();
            pieces.clear();
        }
        Ok(Decoded {
            text_tokens,
            text,
            pieces,
            language: language.clone(),
            language_prob,
            no_speech_prob,
            avg_logprob,
            guards,
        })
    }

    fn encode(&mut self, mel: &[f32], n_frames: usize) -> Result<(DynValue, DynValue), AsrError> {
        let input = TensorRef::from_array_view(([1usize, 80, n_frames], mel))
            .map_err(onnx::run_err(ENC))?;
        let mut out = self
            .encoder
            .run(ort::inputs!["mel" => input])
            .map_err(onnx::run_err(ENC))?;
        let k = out.remove("cross_k").ok_or(OnnxError::Output {
            model: ENC,
            detail: "no cross_k".into(),
        })?;
        let v = out.remove("cross_v").ok_or(OnnxError::Output {
            model: ENC,
            detail: "no cross_v".into(),
        })?;
        Ok((k, v))
    }

    /// Runs one decoder step; leaves the last logits row in `self.logits` (and the first row in
    /// `self.first_row` when `keep_row` is set: the logits predicted at that position).
    fn decoder_step(
        &mut self,
        tokens: &[i64],
        self_k: &DynValue,
        self_v: &DynValue,
        cross_k: &DynValue,
        cross_v: &DynValue,
        keep_row: Option<usize>,
    ) -> Result<(DynValue, DynValue), AsrError> {
        let n = tokens.len();
        let toks = TensorRef::from_array_view(([1usize, n], tokens)).map_err(onnx::run_err(DEC))?;
        let mut inputs = ort::inputs![
            "tokens" => toks,
            "self_k" => self_k,
            "self_v" => self_v,
            "cross_k" => cross_k,
            "cross_v" => cross_v,
        ];
        let keep_row = keep_row.filter(|r| *r < n);
        // Rows of `logits` and where the last and the kept one are: with the rows input, the
        // kept row (if any) then the last one; else every position.
        let (rows, last, kept) = if self.decoder_rows {
            let asked: Vec<i64> = keep_row
                .iter()
                .map(|r| *r as i64)
                .chain([n as i64 - 1])
                .collect();
            let k = asked.len();
            let rows =
                Tensor::from_array(([k], asked.into_boxed_slice())).map_err(onnx::run_err(DEC))?;
            inputs.push((logit_rows::ROWS_INPUT.into(), rows.into()));
            (k, k - 1, keep_row.map(|_| 0))
        } else {
            (n, n - 1, keep_row)
        };
        let mut out = self.decoder.run(inputs).map_err(onnx::run_err(DEC))?;
        {
            let (shape, data) = out["logits"]
                .try_extract_tensor::<f32>()
                .map_err(onnx::out_err(DEC))?;
            let v = self.config.n_vocab;
            if shape.len() != 3 || shape[2] as usize != v || shape[1] as usize != rows {
                return Err(OnnxError::Output {
                    model: DEC,
                    detail: format!("logits shape {shape:?}"),
                }
                .into());
            }
            self.logits.copy_from_slice(&data[last * v..(last + 1) * v]);
            if let Some(i) = kept {
                self.first_row.clear();
                self.first_row.extend_from_slice(&data[i * v..(i + 1) * v]);
            }
        }
        let k = out.remove("new_self_k").ok_or(OnnxError::Output {
            model: DEC,
            detail: "no new_self_k".into(),
        })?;
        let v = out.remove("new_self_v").ok_or(OnnxError::Output {
            model: DEC,
            detail: "no new_self_v".into(),
        })?;
        Ok((k, v))
    }

    /// Most probable language, among the model's languages.
    fn detect_language(
        &mut self,
        cross_k: &DynValue,
        cross_v: &DynValue,
        among: &[String],
    ) -> Result<(String, f32), AsrError> {
        let (l, d) = (self.config.n_text_layers, self.config.d_model);
        let empty_k: DynValue = Tensor::from_array(([l, 1, 0, d], Vec::<f32>::new()))
            .map_err(onnx::run_err(DEC))?
            .into_dyn();
        let empty_v: DynValue = Tensor::from_array(([l, 1, 0, d], Vec::<f32>::new()))
            .map_err(onnx::run_err(DEC))?
            .into_dyn();
        let sot = [self.config.special_tokens.sot as i64];
        self.decoder_step(&sot, &empty_k, &empty_v, cross_k, cross_v, None)?;
        let ids: Vec<(&String, &u32)> = self
            .config
            .lang_ids
            .iter()
            .filter(|(code, _)| among.is_empty() || among.contains(code))
            .collect();
        let max = ids
            .iter()
            .map(|(_, t)| self.logits[**t as usize])
            .fold(f32::NEG_INFINITY, f32::max);
        let sum: f32 = ids
            .iter()
            .map(|(_, t)| (self.logits[**t as usize] - max).exp())
            .sum();
        let (code, tok) = ids
            .iter()
            .max_by(|a, b| self.logits[*a.1 as usize].total_cmp(&self.logits[*b.1 as usize]))
            .ok_or_else(|| AsrError::Config("no languages".into()))?;
        let p = (self.logits[**tok as usize] - max).exp() / sum;
        if tracing::enabled!(tracing::Level::TRACE) {
            let mut all: Vec<(f32, &String)> = ids
                .iter()
                .map(|(c, t)| ((self.logits[**t as usize] - max).exp() / sum, *c))
                .collect();
            all.sort_by(|a, b| b.0.total_cmp(&a.0));
            let top: Vec<String> = all
                .iter()
                .take(4)
                .map(|(p, c)| format!("{c}={p:.3}"))
                .collect();
            tracing::trace!(top = %top.join(" "), "language detection");
        }
        Ok(((*code).clone(), p))
    }

    /// Applies suppress lists and timestamp rules to `self.logits`.
    fn mask(&mut self, timestamps: bool, sampled: &[u32], first: bool, max_ts_steps: u32) {
        let st = &self.config.special_tokens;
        let logits = &mut self.logits;
        let ninf = f32::NEG_INFINITY;
        for &t in &self.config.suppress_tokens {
            if let Some(x) = logits.get_mut(t as usize) {
                *x = ninf;
            }
        }
        if first {
            for &t in &self.config.begin_suppress_tokens {
                if let Some(x) = logits.get_mut(t as usize) {
                    *x = ninf;
                }
            }
        }
        let eot = st.eot as usize;
        let tsb = st.timestamp_begin as usize;
        // every special token other than eot and (when enabled) timestamps
        logits[eot + 1..tsb].fill(ninf);
        if !timestamps {
            logits[tsb..].fill(ninf);
            return;
        }
        apply_timestamp_rules(
            logits,
            sampled,
            st.eot,
            st.timestamp_begin,
            first,
            max_ts_steps,
        );
    }

    /// Splits generated tokens at timestamp tokens.
    fn pieces(
        &self,
        generated: &[u32],
        st: &super::config::SpecialTokens,
    ) -> Result<Vec<TimedText>, AsrError> {
        let mut pieces = Vec::new();
        let mut start: Option<f32> = None;
        let mut toks: Vec<u32> = Vec::new();
        for &t in generated {
            if t >= st.timestamp_begin {
                let time = (t - st.timestamp_begin) as f32 * TIMESTAMP_STEP_S;
                if toks.is_empty() {
                    start = Some(time);
                } else {
                    pieces.push(TimedText {
                        start,
                        end: Some(time),
                        text: self.decode_text(&toks)?,
                    });
                    toks.clear();
                    start = None;
                }
            } else if t < st.eot {
                toks.push(t);
            }
        }
        if !toks.is_empty() {
            pieces.push(TimedText {
                start,
                end: None,
                text: self.decode_text(&toks)?,
            });
        }
        pieces.retain(|p| !p.text.trim().is_empty());
        Ok(pieces)
    }
}

/// Whisper's timestamp rules: timestamps come in pairs, never decrease, the first token is a
/// timestamp no later than 1 s, none past the end of the audio, and a timestamp is forced when
/// timestamps are jointly more probable than any text token.
fn apply_timestamp_rules(
    logits: &mut [f32],
    sampled: &[u32],
    eot: u32,
    tsb: u32,
    first: bool,
    max_ts_steps: u32,
) {
    let ninf = f32::NEG_INFINITY;
    let is_ts = |t: u32| t >= tsb;
    let tsb_u = tsb as usize;
    let n = sampled.len();
    let last_ts = n >= 1 && is_ts(sampled[n - 1]);
    let penult_ts = n < 2 || is_ts(sampled[n - 2]);
    if last_ts && !penult_ts && sampled[n - 1] - tsb >= max_ts_steps {
        // a piece just closed at the end of the audio: nothing is left to transcribe (on a
        // truncated window the decoder would otherwise start the text over)
        let e = logits[eot as usize];
        logits.fill(ninf);
        logits[eot as usize] = if e.is_finite() { e } else { 0.0 };
        return;
    }
    if last_ts {
        if penult_ts {
            logits[tsb_u..].fill(ninf);
        } else {
            logits[..eot as usize].fill(ninf);
        }
    }
    if let Some(&last) = sampled.iter().rev().find(|t| is_ts(**t)) {
        let floor = if last_ts && !penult_ts {
            last
        } else {
            last + 1
        };
        let floor = (floor as usize).min(logits.len());
        logits[tsb_u..floor].fill(ninf);
    }
    if first {
        logits[..tsb_u].fill(ninf);
        let last_allowed = tsb_u + MAX_INITIAL_TIMESTAMP_STEPS as usize + 1;
        if last_allowed < logits.len() {
            logits[last_allowed..].fill(ninf);
        }
    }
    let end_allowed = tsb_u + max_ts_steps as usize + 1;
    if end_allowed < logits.len() {
        logits[end_allowed..].fill(ninf);
    }
    // timestamps jointly more probable than the best text token: force a timestamp
    let max_all = logits.iter().copied().fold(ninf, f32::max);
    if max_all == ninf {
        return;
    }
    let ts_mass: f32 = logits[tsb_u..].iter().map(|x| (x - max_all).exp()).sum();
    let text_max = logits[..tsb_u].iter().copied().fold(ninf, f32::max);
    if ts_mass > 0.0 && ts_mass.ln() > text_max - max_all {
        logits[..tsb_u].fill(ninf);
    }
}

/// The language to decode in when `detected` was identified with probability `p` on
/// `audio_s` seconds: `prefer` is kept unless `detected` reaches `switch_confidence`
/// ([`ENGLISH_SWITCH_CONFIDENCE`] for English on audio shorter than [`SHORT_AUDIO_S`]).
pub fn choose_language(
    detected: String,
    p: f32,
    prefer: Option<&String>,
    switch_confidence: f32,
    audio_s: f32,
) -> String {
    let needed = if detected == "en" && audio_s < SHORT_AUDIO_S {
        switch_confidence.max(ENGLISH_SWITCH_CONFIDENCE)
    } else {
        switch_confidence
    };
    match prefer {
        Some(pref) if *pref != detected && p < needed => pref.clone(),
        _ => detected,
    }
}

/// Index of the best token and its log-probability.
fn argmax_logprob(logits: &[f32]) -> (u32, f32) {
    let mut best = 0usize;
    for (i, x) in logits.iter().enumerate() {
        if *x > logits[best] {
            best = i;
        }
    }
    let max = logits[best];
    let sum: f32 = logits.iter().map(|x| (x - max).exp()).sum();
    (best as u32, -sum.ln())
}

/// Softmax probability of index `i`.
fn softmax_at(logits: &[f32], i: usize) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().map(|x| (x - max).exp()).sum();
    logits.get(i).map_or(0.0, |x| (x - max).exp() / sum)
}

/// Whether the decoded text tokens `hyp` (forced prefix included) repeat the context: their
/// first [`ECHO_MIN_TOKENS`]..=[`ECHO_PROBE_TOKENS`] tokens occur back to back in `context`. A
/// phrase really said again is decoded again without the context, at the cost of one decode.
pub fn context_echo(hyp: &[u32], context: &[u32]) -> bool {
    if hyp.len() < ECHO_MIN_TOKENS {
        return false;
    }
    let probe = &hyp[..hyp.len().min(ECHO_PROBE_TOKENS)];
    context.windows(probe.len()).any(|w| w == probe)
}

/// If the sequence ends in a loop, the length to keep (the repeated copy removed).
///
/// A k-gram repeated back to back counts as a loop for k ≥ 3; shorter units must repeat more
/// (k = 1: four times, k = 2: three times), as natural speech repeats short words.
pub fn repetition_cut(seq: &[u32]) -> Option<usize> {
    let n = seq.len();
    for k in 1..=MAX_LOOP_K {
        let copies = match k {
            1 => 4,
            2 => 3,
            _ => 2,
        };
        if n < k * copies {
            break;
        }
        let tail = &seq[n - k..];
        if (1..copies).all(|c| &seq[n - (c + 1) * k..n - c * k] == tail) {
            return Some(n - (copies - 1) * k);
        }
    }
    None
}

/// [`repetition_cut`] on the text tokens only (those below `eot`): with timestamps, a repeated
/// sentence differs from its first copy only by its timestamp tokens. Returns the length of
/// `seq` to keep: the first copy and the timestamp that closes it.
pub fn text_loop_cut(seq: &[u32], eot: u32) -> Option<usize> {
    if seq.last().is_none_or(|t| *t >= eot) {
        return None;
    }
    let positions: Vec<usize> = (0..seq.len()).filter(|i| seq[*i] < eot).collect();
    let text: Vec<u32> = positions.iter().map(|i| seq[*i]).collect();
    let keep = repetition_cut(&text)?;
    if keep == 0 {
        return Some(0);
    }
    let mut end = positions[keep - 1] + 1;
    if seq.get(end).is_some_and(|t| *t > eot) {
        end += 1;
    }
    Some(end)
}

/// If the last `n` tokens of `seq` already occur earlier in it, the length to keep (without
/// them).
pub fn repeated_ngram_cut(seq: &[u32], n: usize) -> Option<usize> {
    let len = seq.len();
    if n == 0 || len <= n {
        return None;
    }
    let tail = &seq[len - n..];
    seq[..len - 1]
        .windows(n)
        .take(len - n)
        .any(|w| w == tail)
        .then_some(len - n)
}

/// Length of `text` divided by its zlib-compressed length (whisper's loop detector).
pub fn compression_ratio(text: &str) -> f32 {
    if text.len() < 24 {
        return 1.0;
    }
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    if enc.write_all(text.as_bytes()).is_err() {
        return 1.0;
    }
    match enc.finish() {
        Ok(z) if !z.is_empty() => text.len() as f32 / z.len() as f32,
        _ => 1.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn english_on_short_audio_must_be_surer() {
        let (en, fr) = (String::from("en"), String::from("fr"));
        let choose = |d: &str, p, prefer, s| choose_language(d.into(), p, prefer, 0.7, s);
        // a second of French heard as English (0.9): the preferred French stays
        assert_eq!(choose("en", 0.9, Some(&fr), 1.0), "fr");
        assert_eq!(choose("en", 0.97, Some(&fr), 1.0), "en");
        // longer audio: the usual switch confidence
        assert_eq!(choose("en", 0.8, Some(&fr), 4.0), "en");
        assert_eq!(choose("en", 0.6, Some(&fr), 4.0), "fr");
        // leaving English for another language is not made harder
        assert_eq!(choose("fr", 0.75, Some(&en), 1.0), "fr");
        assert_eq!(choose("fr", 0.65, Some(&en), 1.0), "en");
        // nothing preferred: the detection, whatever its probability
        assert_eq!(choose("en", 0.55, None, 0.5), "en");
        assert_eq!(choose("en", 0.55, Some(&en), 0.5), "en");
    }

    #[test]
    fn a_copy_of_the_context_is_an_echo() {
        let context = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
        assert!(
            context_echo(&[3, 4, 5, 6], &context),
            "four tokens in a row"
        );
        assert!(
            context_echo(&[2, 3, 4, 5, 6, 7, 40, 41], &context),
            "first six"
        );
        assert!(!context_echo(&[3, 4, 5], &context), "too short to tell");
        assert!(!context_echo(&[3, 4, 6, 7], &context), "not back to back");
        assert!(
            !context_echo(&[2, 3, 4, 5, 6, 40], &context),
            "diverges within six"
        );
        assert!(!context_echo(&[3, 4, 5, 6], &[]), "no context");
    }

    #[test]
    fn loops_are_cut() {
        assert_eq!(repetition_cut(&[1, 2, 3, 4, 5, 6]), None);
        assert_eq!(repetition_cut(&[9, 1, 2, 3, 1, 2, 3]), Some(4));
        assert_eq!(repetition_cut(&[7, 7]), None);
        assert_eq!(repetition_cut(&[7, 7, 7, 7]), Some(1));
        assert_eq!(repetition_cut(&[5, 6, 5, 6]), None);
        assert_eq!(repetition_cut(&[5, 6, 5, 6, 5, 6]), Some(2));
    }

    #[test]
    fn sentence_loops_are_cut_across_timestamps() {
        // text < 10 = eot; timestamps from 13: "<0> a b c d <5><5> a b c d" loops
        let seq = [13, 1, 2, 3, 4, 18, 18, 1, 2, 3, 4];
        assert_eq!(repetition_cut(&seq), None, "the timestamps hide the loop");
        assert_eq!(
            text_loop_cut(&seq, 10),
            Some(6),
            "first copy and its closing timestamp"
        );
        // a sentence that only shares words with the previous one is no loop
        assert_eq!(
            text_loop_cut(&[13, 1, 2, 3, 4, 18, 18, 1, 2, 3, 5], 10),
            None
        );
        // checked when a text token arrives, not on timestamps
        assert_eq!(text_loop_cut(&[13, 1, 2, 3, 1, 2, 3, 20], 10), None);
        assert_eq!(text_loop_cut(&[13, 1, 2, 3, 1, 2, 3], 10), Some(4));
    }

    #[test]
    fn restarts_are_cut() {
        // "a b c d x a b c d": the second "a b c d" is dropped
        assert_eq!(repeated_ngram_cut(&[1, 2, 3, 4, 9, 1, 2, 3, 4], 4), Some(5));
        assert_eq!(repeated_ngram_cut(&[1, 2, 3, 4, 9, 1, 2, 3, 5], 4), None);
        assert_eq!(repeated_ngram_cut(&[1, 2, 3], 4), None);
        // overlapping repeats of a short unit count too
        assert_eq!(repeated_ngram_cut(&[7, 7, 7, 7, 7], 4), Some(1));
    }

    #[test]
    fn compression_ratio_flags_loops() {
        let normal = "The quarterly report shows that revenue grew by twelve percent in the north.";
        assert!(
            compression_ratio(normal) < 2.0,
            "{}",
            compression_ratio(normal)
        );
        let looped = "thank you so much ".repeat(12);
        assert!(compression_ratio(&looped) > 2.4);
    }

    #[test]
    fn timestamp_rules_pair_and_order() {
        // vocab: 0..10 text, 10 = eot, 11..13 specials, 13.. timestamps
        let (eot, tsb) = (10u32, 13u32);
        let mut l = vec![0.0f32; 40];
        apply_timestamp_rules(&mut l, &[], eot, tsb, true, 20);
        assert!(
            l[..13].iter().all(|x| x.is_infinite()),
            "first token must be a timestamp"
        );
        assert!(l[13..].iter().take(21).all(|x| x.is_finite()));
        let mut l = vec![0.0f32; 40];
        apply_timestamp_rules(&mut l, &[15, 3], eot, tsb, false, 20);
        assert!(
            l[13..16].iter().all(|x| x.is_infinite()),
            "timestamps never decrease"
        );
        assert!(l[16].is_finite());
        let mut l = vec![0.0f32; 40];
        apply_timestamp_rules(&mut l, &[15, 3, 17], eot, tsb, false, 20);
        assert!(
            l[..10].iter().all(|x| x.is_infinite()),
            "an opened timestamp pair closes"
        );
        let mut l = vec![0.0f32; 40];
        apply_timestamp_rules(&mut l, &[15, 3, 17, 17], eot, tsb, false, 20);
        assert!(
            l[13..].iter().all(|x| x.is_infinite()),
            "after a pair comes text"
        );
        let mut l = vec![0.0f32; 40];
        apply_timestamp_rules(&mut l, &[13, 3, 18], eot, tsb, false, 5);
        assert!(
            l.iter()
                .enumerate()
                .all(|(i, x)| x.is_finite() == (i == eot as usize)),
            "a piece closed at the end of the audio ends the text"
        );
        let mut l = vec![0.0f32; 40];
        apply_timestamp_rules(&mut l, &[13, 3], eot, tsb, false, 5);
        assert!(
            l[19..].iter().all(|x| x.is_infinite()),
            "no timestamp past the audio"
        );
    }
}
