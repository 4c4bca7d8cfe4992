//! Speaker diarization on the dev corpus with the real models: DER of the diarizer on the three
//! mixed meetings (scored by the corpus's `score/der.py`, collar ±0.25 s), the number of speakers
//! found, one label for a single-speaker track, none for non-speech; then through the captioner:
//! finals labelled and split at speaker changes, labels never revised and independent of how the
//! audio was sliced.

use std::collections::HashMap;

use crate::common::*;
use rand::{Rng, SeedableRng};
use soustitre::captions::{CaptionEvent, validate_log};
use soustitre::diarize::{
    DEFAULT_JOIN_GAP_S, DiarizeSettings, diarize_samples, speakers_of, turns_from_finals,
    write_rttm,
};
use soustitre::stream::{LanguageSetting, StreamSettings};

const MEETINGS: [&str; 3] = ["en_3spk", "fr_3spk", "mix_enfr_3spk"];
/// The bound of the diarizer's DER on every dev meeting.
const MAX_DER: f64 = 0.20;
/// The model used through the captioner (the fastest; the labels do not depend on it).
const MODEL: &str = "whisper-tiny.en";

fn offline(path: &std::path::Path) -> soustitre::diarize::OfflineDiarization {
    let engine = diarize_engine(MODEL);
    let mut vad = engine.vad().unwrap();
    let mut emb = engine.campplus().unwrap();
    let audio = read_wav(path);
    diarize_samples(
        &audio,
        &StreamSettings::default(),
        &DiarizeSettings::default(),
        &mut vad,
        &mut emb,
    )
    .unwrap()
}

#[test]
fn meetings_der_and_speaker_count() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for m in MEETINGS {
        let wav = corpus(&format!("meetings/{m}/meeting.wav"));
        let reference = corpus(&format!("meetings/{m}/meeting.rttm"));
        let r = offline(&wav);
        let hyp = dir.path().join(format!("{m}.rttm"));
        write_rttm(std::fs::File::create(&hyp).unwrap(), m, &r.turns).unwrap();
        let der = der(&reference, &hyp);
        let want = rttm_speakers(&reference);
        eprintln!(
            "{m}: DER {:.2} %, {} speakers (reference {want})",
            der * 100.0,
            r.speakers
        );
        if der > MAX_DER {
            failures.push(format!("{m}: DER {:.1} %", der * 100.0));
        }
        if r.speakers != want {
            failures.push(format!("{m}: {} speakers, expected {want}", r.speakers));
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}

#[test]
fn single_speaker_track_gets_one_label() {
    for t in ["A", "B", "C"] {
        let r = offline(&corpus(&format!("meetings/en_3spk/tracks/{t}.wav")));
        assert!(!r.turns.is_empty(), "track {t}: no speech found");
        assert_eq!(r.speakers, 1, "track {t}: {:?}", r.turns);
    }
}

#[test]
fn nonspeech_gets_no_speaker() {
    for f in [
        "silence_10s",
        "white_noise_m50dBFS_10s",
        "tone440_noise_10s",
    ] {
        let r = offline(&corpus(&format!("nonspeech/{f}.wav")));
        assert!(r.turns.is_empty(), "{f}: {:?}", r.turns);
        assert_eq!(r.speakers, 0);
    }
}

fn settings() -> StreamSettings {
    StreamSettings {
        language: LanguageSetting::Fixed("en".into()),
        ..Default::default()
    }
}

/// Captions `audio` through a diarizing captioner, slicing it with `sizes`.
fn caption(audio: &[f32], sizes: impl FnMut() -> usize) -> Vec<CaptionEvent> {
    caption_with_turns(audio, sizes).0
}

/// [`caption`], with the speaker turns the captioner made of the voiced audio.
fn caption_with_turns(
    audio: &[f32],
    mut sizes: impl FnMut() -> usize,
) -> (Vec<CaptionEvent>, Vec<soustitre::diarize::Turn>) {
    let mut c = diarize_engine(MODEL)
        .diarized_captioner(
            settings(),
            &DiarizeSettings::default(),
            "mix",
            None,
            Box::new(|| 0.0),
        )
        .unwrap();
    let mut out = Vec::new();
    let mut rest = audio;
    while !rest.is_empty() {
        let n = sizes().clamp(1, rest.len());
        c.push(&rest[..n], true, &mut out).unwrap();
        rest = &rest[n..];
    }
    c.finish(&mut out).unwrap();
    let turns = c.take_turns();
    (out, turns)
}

/// Speaker, start, end and text of every final.
fn labelled_finals(events: &[CaptionEvent]) -> Vec<(Option<String>, f64, f64, String)> {
    events
        .iter()
        .filter(|e| e.is_final())
        .map(|e| (e.speaker.clone(), e.start, e.end, e.text.clone()))
        .collect()
}

#[test]
fn captioner_labels_finals_and_splits_at_speaker_changes() {
    let m = "en_3spk";
    let wav = corpus(&format!("meetings/{m}/meeting.wav"));
    let audio = read_wav(&wav);
    let events = caption(&audio, || usize::MAX);
    let v = validate_log(&events, audio.len() as f64 / 16_000.0);
    assert!(v.is_empty(), "{v:?}");
    // every final has a speaker; the turns made from the finals score like the diarizer alone
    let finals: Vec<_> = events.iter().filter(|e| e.is_final()).collect();
    assert!(finals.len() >= 8, "{} finals", finals.len());
    for f in &finals {
        assert!(f.speaker.is_some(), "final without speaker: {}", f.text);
    }
    assert_eq!(speakers_of(&events).len(), 3, "{:?}", speakers_of(&events));
    let dir = tempfile::tempdir().unwrap();
    let hyp = dir.path().join("hyp.rttm");
    let turns = turns_from_finals(finals.iter().copied(), DEFAULT_JOIN_GAP_S);
    write_rttm(std::fs::File::create(&hyp).unwrap(), m, &turns).unwrap();
    let der = der(&corpus(&format!("meetings/{m}/meeting.rttm")), &hyp);
    assert!(
        der <= MAX_DER,
        "DER through the captioner {:.1} %",
        der * 100.0
    );
}

/// The diarization target through the captioner: who spoke when, as the captioner labels it.
const MAX_CAPTIONER_DER: f64 = 0.12;

#[test]
fn captioner_turns_score_on_every_meeting() {
    for m in MEETINGS {
        let audio = read_wav(&corpus(&format!("meetings/{m}/meeting.wav")));
        let (events, turns) = caption_with_turns(&audio, || usize::MAX);
        // the turns carry the captions' labels, and nothing else
        let labels: std::collections::BTreeSet<&str> =
            turns.iter().map(|t| t.speaker.as_str()).collect();
        let captioned: std::collections::BTreeSet<String> =
            speakers_of(&events).into_iter().collect();
        assert_eq!(labels.len(), 3, "{m}: turn labels {labels:?}");
        for l in &captioned {
            assert!(
                labels.contains(l.as_str()),
                "{m}: caption label {l} has no turn"
            );
        }
        assert!(
            turns
                .windows(2)
                .all(|w| w[0].start <= w[1].start && w[0].end > w[0].start)
        );
        let dir = tempfile::tempdir().unwrap();
        let hyp = dir.path().join("hyp.rttm");
        write_rttm(std::fs::File::create(&hyp).unwrap(), m, &turns).unwrap();
        let der = der(&corpus(&format!("meetings/{m}/meeting.rttm")), &hyp);
        assert!(
            der <= MAX_CAPTIONER_DER,
            "{m}: DER of the captioner's turns {:.1} %",
            der * 100.0
        );
    }
}

#[test]
fn labels_never_change_and_do_not_depend_on_slicing() {
    let audio = read_wav(&corpus("meetings/mix_enfr_3spk/meeting.wav"));
    let (whole, whole_turns) = caption_with_turns(&audio, || usize::MAX);
    let reference = labelled_finals(&whole);
    assert!(reference.iter().all(|f| f.0.is_some()), "{reference:?}");
    for seed in [7u64, 1234] {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let (sliced, turns) = caption_with_turns(&audio, || rng.random_range(1..4000));
        assert_eq!(labelled_finals(&sliced), reference, "seed {seed}");
        assert_eq!(turns, whole_turns, "seed {seed}: speaker turns");
        // one final per segment, never re-emitted with another speaker
        let mut seen: HashMap<(&str, &str), Option<&str>> = HashMap::new();
        for e in sliced.iter().filter(|e| e.is_final()) {
            let prev = seen.insert((&e.track, &e.segment_id), e.speaker.as_deref());
            assert!(prev.is_none(), "segment {} finalised twice", e.segment_id);
        }
        let v = validate_log(&sliced, audio.len() as f64 / 16_000.0);
        assert!(v.is_empty(), "{v:?}");
    }
}
