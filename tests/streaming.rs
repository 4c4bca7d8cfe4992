//! The streaming policy on real audio and real models: finals independent of buffer slicing,
//! valid event logs, partials that are provisional then replaced, forced cuts.

use crate::common::*;
use rand::{Rng, SeedableRng};
use soustitre::captions::{CaptionEvent, EventKind, validate_log};
use soustitre::stream::{Captioner, LanguageSetting, StreamSettings};

fn captioner(settings: StreamSettings) -> Captioner {
    engine("whisper-base")
        .captioner(settings, "mix", Box::new(|| 0.0))
        .unwrap()
}

/// Feeds `audio` in slices chosen by `sizes`; `busy` tells the captioner more input is pending.
fn run(
    settings: &StreamSettings,
    audio: &[f32],
    mut sizes: impl FnMut() -> usize,
    busy: bool,
) -> Vec<CaptionEvent> {
    let mut c = captioner(settings.clone());
    let mut out = Vec::new();
    let mut rest = audio;
    while !rest.is_empty() {
        let n = sizes().clamp(1, rest.len());
        c.push(&rest[..n], busy, &mut out).unwrap();
        rest = &rest[n..];
    }
    c.finish(&mut out).unwrap();
    out
}

/// Text, start, end and words (text, start, end) of one final.
type FinalView = (String, f64, f64, Vec<(String, f64, f64)>);

/// What must not depend on slicing: text, times and words of every final.
fn final_view(events: &[CaptionEvent]) -> Vec<FinalView> {
    events
        .iter()
        .filter(|e| e.is_final())
        .map(|e| {
            (
                e.text.clone(),
                e.start,
                e.end,
                e.words
                    .iter()
                    .map(|w| (w.w.clone(), w.start, w.end))
                    .collect(),
            )
        })
        .collect()
}

fn en() -> StreamSettings {
    StreamSettings {
        language: LanguageSetting::Fixed("en".into()),
        ..Default::default()
    }
}

#[test]
fn finals_do_not_depend_on_slicing() {
    // shorter segments than the defaults so that forced cuts happen too
    let settings = StreamSettings {
        max_segment_s: 6.0,
        long_segment_s: 4.0,
        ..en()
    };
    let audio = read_wav(&corpus("meetings/en_3spk/meeting.wav"));
    let whole = run(&settings, &audio, || usize::MAX, true);
    let reference = final_view(&whole);
    assert!(
        reference.len() >= 7,
        "expected several finals, got {}",
        reference.len()
    );
    for seed in [7u64, 1234] {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        // random slices, and optional work (partials, speculative finals) done whenever caught up
        let sliced = run(&settings, &audio, || rng.random_range(1..6000), false);
        assert!(
            sliced.iter().any(|e| e.kind == EventKind::Partial),
            "seed {seed}: partials expected"
        );
        assert_eq!(
            final_view(&sliced),
            reference,
            "seed {seed}: finals differ from the whole-buffer run"
        );
    }
}

#[test]
fn event_log_is_valid() {
    for (file, duration) in [
        ("meetings/en_3spk/meeting.wav", 49.227),
        ("utterances/real/librivox_0870.wav", 7.1),
    ] {
        let audio = read_wav(&corpus(file));
        // 20 ms buffers, always caught up: partials at every interval
        let events = run(&en(), &audio, || 320, false);
        let violations = validate_log(&events, duration);
        assert!(violations.is_empty(), "{file}: {violations:?}");
        let partials: Vec<_> = events
            .iter()
            .filter(|e| e.kind == EventKind::Partial)
            .collect();
        assert!(!partials.is_empty(), "{file}: no partials");
        for p in &partials {
            assert!(!p.text.trim().is_empty());
            assert!(
                p.text.starts_with(&p.stable_text),
                "stable text {:?} is not a prefix of {:?}",
                p.stable_text,
                p.text
            );
        }
        // seq strictly increasing, one final per segment, partials before their final
        assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
        let mut seen_final = std::collections::HashSet::new();
        for e in &events {
            assert!(
                !seen_final.contains(&e.segment_id),
                "{file}: event after the final of {}",
                e.segment_id
            );
            if e.is_final() {
                seen_final.insert(e.segment_id.clone());
            }
        }
        let segments: std::collections::HashSet<_> =
            events.iter().map(|e| e.segment_id.clone()).collect();
        assert_eq!(
            segments.len(),
            seen_final.len(),
            "{file}: a segment has no final"
        );
        // the finals follow each other: no caption's words reach back into the previous one
        let fin: Vec<_> = events.iter().filter(|e| e.is_final()).collect();
        for w in fin.windows(2) {
            assert!(
                w[1].start >= w[0].end,
                "{file}: {:?} starts before {:?} ends",
                w[1].text,
                w[0].text
            );
        }
    }
}

#[test]
fn stable_prefix_only_grows_within_a_segment() {
    let audio = read_wav(&corpus("meetings/en_3spk/meeting.wav"));
    let events = run(&en(), &audio, || 320, false);
    let mut last: std::collections::HashMap<String, String> = Default::default();
    for e in events.iter().filter(|e| e.kind == EventKind::Partial) {
        let prev = last.entry(e.segment_id.clone()).or_default();
        assert!(
            e.stable_text.starts_with(prev.as_str()),
            "stable text shrank: {prev:?} -> {:?}",
            e.stable_text
        );
        *prev = e.stable_text.clone();
    }
}

/// Partial words rewritten by the next partial of their segment although their audio had ended
/// at least `window_s` before the newest audio that partial covers: (segment, word index, shown
/// text, later text). Words compare without case and punctuation. Not counted: a partial's last
/// word (no word has started after it yet: it may be lengthened or dropped), and its last one or
/// two words when they repeat its first ones (maybe the recognizer starting the utterance over,
/// which is cut).
fn late_rewrites(events: &[CaptionEvent], window_s: f64) -> Vec<(String, usize, String, String)> {
    let norm = |w: &str| {
        w.trim_matches(|c: char| c.is_ascii_punctuation())
            .to_lowercase()
    };
    let mut by_segment: std::collections::BTreeMap<&str, Vec<&CaptionEvent>> = Default::default();
    for e in events.iter().filter(|e| e.kind == EventKind::Partial) {
        by_segment.entry(&e.segment_id).or_default().push(e);
    }
    let mut out = Vec::new();
    for (seg, partials) in by_segment {
        for pair in partials.windows(2) {
            let (p, q) = (pair[0], pair[1]);
            let shown: Vec<String> = p.words.iter().map(|w| norm(&w.w)).collect();
            let n = shown.len();
            let restart = (n.saturating_sub(2).max(1)..n)
                .find(|&k| !shown[k].is_empty() && shown[k..] == shown[..n - k])
                .unwrap_or(n)
                .min(n.saturating_sub(1));
            // `end` is the newest audio a partial covers, never after the audio it was made at
            for (i, w) in p.words.iter().enumerate().take(restart) {
                if q.end - w.end < window_s {
                    continue;
                }
                if q.words.get(i).is_none_or(|x| norm(&x.w) != norm(&w.w)) {
                    let now = q.words.get(i).map_or("", |x| x.w.as_str());
                    out.push((seg.to_owned(), i, w.w.clone(), now.to_owned()));
                }
            }
        }
    }
    out
}

#[test]
fn revision_window_keeps_words_once_read() {
    // a word whose audio ended longer than the revision window before a partial's newest audio
    // is kept by that partial as the one before showed it (even if it was fresh then) until
    // the final; without the window the recognizer does rewrite such words on these files
    let files = [
        ("meetings/en_3spk/meeting.wav", "en"),
        ("meetings/en_3spk/tracks/A.wav", "en"),
        ("meetings/en_3spk/tracks/C.wav", "en"),
        ("utterances/synth/en_02.wav", "en"),
        ("utterances/synth/fr_02.wav", "fr"),
        ("utterances/synth/fr_03.wav", "fr"),
    ];
    let window = StreamSettings::default().revision_window_ms;
    assert!(window > 0, "on by default");
    let mut unlimited = Vec::new();
    for (f, language) in files {
        let a = read_wav(&corpus(f));
        let s = StreamSettings {
            language: LanguageSetting::Fixed(language.into()),
            ..Default::default()
        };
        let late = late_rewrites(&run(&s, &a, || 320, false), window as f64 / 1000.0);
        assert!(late.is_empty(), "{f}: {late:?}");
        let off = StreamSettings {
            revision_window_ms: 0,
            ..s
        };
        unlimited.extend(late_rewrites(
            &run(&off, &a, || 320, false),
            window as f64 / 1000.0,
        ));
    }
    assert!(
        !unlimited.is_empty(),
        "no late rewrite without the window: the test shows nothing"
    );
}

#[test]
fn a_language_switch_keeps_the_words_once_read() {
    // when a caption's partials switch language (a French turn overlapped by an English one on
    // one microphone), the words read longer than the revision window ago stay as shown and
    // only the speech after them is shown in the new language; words of a language heard by a
    // single hypothesis (the detector's first guess) may still be rewritten
    let window = StreamSettings::default().revision_window_ms as f64 / 1000.0;
    let norm = |w: &str| {
        w.trim_matches(|c: char| c.is_ascii_punctuation())
            .to_lowercase()
    };
    let auto = StreamSettings {
        language: LanguageSetting::Auto,
        ..Default::default()
    };
    let mut switches = 0;
    for f in [
        "meetings/fr_3spk/meeting.wav",
        "meetings/mix_enfr_3spk/meeting.wav",
    ] {
        let events = run(&auto, &read_wav(&corpus(f)), || 320, false);
        let mut by_segment: std::collections::BTreeMap<&str, Vec<&CaptionEvent>> =
            Default::default();
        for e in events.iter().filter(|e| e.kind == EventKind::Partial) {
            by_segment.entry(&e.segment_id).or_default().push(e);
        }
        for partials in by_segment.values() {
            for (k, pair) in partials.windows(2).enumerate() {
                let (p, q) = (pair[0], pair[1]);
                // partials in a row, up to p, in p's language
                let heard = partials[..=k]
                    .iter()
                    .rev()
                    .take_while(|e| e.language == p.language)
                    .count();
                if q.language == p.language || heard < 2 {
                    continue;
                }
                // the last word shown may still be lengthened or dropped
                let read: Vec<_> = p.words[..p.words.len().saturating_sub(1)]
                    .iter()
                    .take_while(|w| q.end - w.end >= window)
                    .collect();
                if read.is_empty() {
                    continue;
                }
                switches += 1;
                for (i, w) in read.iter().enumerate() {
                    assert!(
                        q.words.get(i).is_some_and(|x| norm(&x.w) == norm(&w.w)),
                        "{f} {}: {:?} ({:?}) rewritten as {:?} ({:?})",
                        p.segment_id,
                        p.text,
                        p.language,
                        q.text,
                        q.language
                    );
                }
            }
        }
    }
    assert!(
        switches >= 2,
        "{switches} language switches: the test shows nothing"
    );
}

#[test]
fn partials_keep_up_with_the_speech() {
    // in the English meeting a speaker starts right after another's sentence ends; the decoder
    // then tends to end its hypothesis at that sentence end for seconds: partials must still
    // follow the speech (each event's end is the newest audio it covers)
    let audio = read_wav(&corpus("meetings/en_3spk/meeting.wav"));
    let events = run(&en(), &audio, || 320, false);
    let mut by_segment: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    for e in &events {
        by_segment.entry(&e.segment_id).or_default().push(e.end);
    }
    assert!(by_segment.len() >= 6, "{} segments", by_segment.len());
    for (seg, ends) in &by_segment {
        let gap = ends.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
        assert!(
            gap <= 1.5,
            "{seg}: {gap:.2} s of speech without a new partial ({ends:?})"
        );
    }
}

#[test]
fn trims_go_past_a_sentence_end_and_leave_the_finals_alone() {
    // in the English meeting a speaker often starts right after another's sentence, under the
    // endpoint silence, and the decoder stops at that sentence end: partials are then trimmed
    // there (they decode only the audio after it, the words before stay as shown); the finals
    // still decode whole segments: they are those of a run without partials
    let audio = read_wav(&corpus("meetings/en_3spk/meeting.wav"));
    let mut c = captioner(en());
    let mut events = Vec::new();
    for chunk in audio.chunks(320) {
        c.push(chunk, false, &mut events).unwrap();
    }
    c.finish(&mut events).unwrap();
    assert!(c.stats().trims >= 1, "no trim: {:?}", c.stats());
    let window = StreamSettings::default().revision_window_ms as f64 / 1000.0;
    let late = late_rewrites(&events, window);
    assert!(late.is_empty(), "{late:?}");
    let off = StreamSettings {
        partials: false,
        ..en()
    };
    assert_eq!(
        final_view(&events),
        final_view(&run(&off, &audio, || 320, false))
    );
}

#[test]
fn busy_captioner_skips_partials_but_keeps_finals() {
    let audio = read_wav(&corpus("utterances/synth/en_02.wav"));
    let busy = run(&en(), &audio, || 320, true);
    assert!(
        busy.iter().all(|e| e.is_final()),
        "no optional work while input is pending"
    );
    let calm = run(&en(), &audio, || 320, false);
    assert_eq!(final_view(&busy), final_view(&calm));
}

#[test]
fn partials_off_gives_finals_only() {
    let audio = read_wav(&corpus("utterances/synth/en_01.wav"));
    let s = StreamSettings {
        partials: false,
        ..en()
    };
    let events = run(&s, &audio, || 320, false);
    assert!(!events.is_empty());
    assert!(events.iter().all(|e| e.is_final()));
}

#[test]
fn a_gap_closes_the_segment_and_shifts_time() {
    let audio = read_wav(&corpus("utterances/synth/en_01.wav"));
    let mut c = captioner(en());
    let mut out = Vec::new();
    // half the utterance, then 2 s lost, then the rest
    let half = audio.len() / 2;
    c.push(&audio[..half], true, &mut out).unwrap();
    c.gap(32_000, &mut out).unwrap();
    c.push(&audio[half..], true, &mut out).unwrap();
    c.finish(&mut out).unwrap();
    let fin = finals(&out);
    assert!(
        fin.len() >= 2,
        "the gap must close the first segment: {:?}",
        fin.iter().map(|e| &e.text).collect::<Vec<_>>()
    );
    let after = fin.last().unwrap();
    assert!(
        after.start >= half as f64 / 16_000.0 + 2.0 - 0.3,
        "times after the gap include it: {}",
        after.start
    );
    assert!(after.end <= audio.len() as f64 / 16_000.0 + 2.0 + 0.05);
}

#[test]
fn partials_do_not_start_over() {
    // on audio cut mid-speech the recognizer sometimes starts the utterance over inside one
    // hypothesis ("The security team recommends that the security team recommend..."): no
    // partial may show its first three words twice
    let norm = |w: &str| -> String {
        w.chars()
            .filter(|c| c.is_alphanumeric() || *c == '\'')
            .flat_map(char::to_lowercase)
            .collect()
    };
    let mut partials = 0;
    for f in [
        "utterances/synth/en_02.wav",
        "meetings/en_3spk/tracks/C.wav",
        "meetings/en_3spk/meeting.wav",
    ] {
        let events = run(&en(), &read_wav(&corpus(f)), || 320, false);
        for e in events.iter().filter(|e| e.kind == EventKind::Partial) {
            partials += 1;
            let w: Vec<String> = e.text.split_whitespace().map(norm).collect();
            let again =
                w.len() >= 3 && (3..w.len().saturating_sub(2)).any(|k| w[k..k + 3] == w[..3]);
            assert!(!again, "{f}: {}", e.text);
        }
    }
    assert!(partials >= 50, "{partials} partials");
}
