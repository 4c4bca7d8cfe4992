//! Language per voice: on one microphone shared by people speaking different languages, with
//! `language = auto` and diarization, each voice keeps its own language lock (the dev corpus's
//! English/French meeting, whisper-base), and the finals still do not depend on slicing.

use crate::common::*;
use rand::{Rng, SeedableRng};
use soustitre::captions::{CaptionEvent, validate_log};
use soustitre::diarize::DiarizeSettings;
use soustitre::stream::{LanguageSetting, StreamSettings};

const MODEL: &str = "whisper-base";
const MEETING: &str = "meetings/mix_enfr_3spk";
/// Regression bound of the pooled WER on the (synthetic-voice) bilingual meeting: 34.8 % when
/// written, 46 % with one language lock for the whole stream.
const MAX_WER: f64 = 0.40;

fn caption(audio: &[f32], mut sizes: impl FnMut() -> usize) -> Vec<CaptionEvent> {
    let settings = StreamSettings {
        language: LanguageSetting::Auto,
        ..Default::default()
    };
    let mut c = diarize_engine(MODEL)
        .diarized_captioner(
            settings,
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
    out
}

#[test]
fn each_voice_keeps_its_language_and_finals_do_not_depend_on_slicing() {
    let audio = read_wav(&corpus(&format!("{MEETING}/meeting.wav")));
    let events = caption(&audio, || usize::MAX);
    let v = validate_log(&events, audio.len() as f64 / 16_000.0);
    assert!(v.is_empty(), "{v:?}");
    let finals: Vec<&CaptionEvent> = events
        .iter()
        .filter(|e| e.is_final() && !e.text.is_empty())
        .collect();
    let refs = reference_turns(MEETING);
    let mut checked = [0usize; 2];
    for f in &finals {
        // the reference utterance covering most of the final
        let best = refs
            .iter()
            .map(|(s, e, l)| ((f.end.min(*e) - f.start.max(*s)).max(0.0), l))
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .unwrap();
        if best.0 < 0.5 * (f.end - f.start) {
            continue; // mostly overlapped speech: no single expected language
        }
        assert_eq!(
            f.language.as_deref(),
            Some(best.1.as_str()),
            "[{:.2}-{:.2}] {:?}: {}",
            f.start,
            f.end,
            f.speaker,
            f.text
        );
        checked[usize::from(best.1 == "fr")] += 1;
    }
    assert!(
        checked[0] >= 4 && checked[1] >= 3,
        "finals checked (en, fr): {checked:?}"
    );
    let (wer, errors, words) = wer(&corpus(&format!("{MEETING}/meeting.stm")), &events);
    assert!(
        wer <= MAX_WER,
        "bilingual meeting WER {:.1} % ({errors}/{words})",
        wer * 100.0
    );

    let key = |ev: &[CaptionEvent]| -> Vec<(String, Option<String>, Option<String>)> {
        ev.iter()
            .filter(|e| e.is_final())
            .map(|e| (e.text.clone(), e.speaker.clone(), e.language.clone()))
            .collect()
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(99);
    let sliced = caption(&audio, || rng.random_range(1..4000));
    assert_eq!(key(&sliced), key(&events));
}
