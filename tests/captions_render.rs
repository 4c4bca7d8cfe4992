//! Captions end to end through the public API: a hand-made log of finals → cues → exact WebVTT
//! and SRT text; a JSONL round trip; the shared simulated log rendered and validated.

use soustitre::captions::{
    CaptionEvent, CueSettings, EventKind, JsonlWriter, SubtitleFormat, Word, build_cues, read_log,
    render_log, to_srt, to_vtt, validate_log,
};

/// A final whose words are spoken back to back from `start`, `per_word` seconds each. Times are
/// whole milliseconds, as in real logs (serde_json, without its `float_roundtrip` feature, may
/// read other values back one ULP off).
fn ms(t: f64) -> f64 {
    (t * 1000.0).round() / 1000.0
}

fn final_event(
    seq: u64,
    seg: &str,
    speaker: &str,
    text: &str,
    start: f64,
    per_word: f64,
) -> CaptionEvent {
    let words: Vec<Word> = text
        .split_whitespace()
        .enumerate()
        .map(|(k, w)| {
            let a = start + k as f64 * per_word;
            Word {
                w: w.into(),
                start: ms(a),
                end: ms(a + per_word),
                speaker: None,
            }
        })
        .collect();
    let end = words.last().unwrap().end;
    CaptionEvent {
        seq,
        kind: EventKind::Final,
        segment_id: seg.into(),
        revision: 0,
        track: "mix".into(),
        speaker: Some(speaker.into()),
        language: Some("en".into()),
        text: text.into(),
        stable_text: text.into(),
        start,
        end,
        emitted_at: ms(end + 0.8),
        words,
    }
}

/// The hand-made meeting:
/// * s1 (A) is short: extended to the minimum duration;
/// * s2 (B) "Sure." is short but A speaks again 0.3 s later: the minimum duration is blocked;
/// * s3 (A) is too long for one cue: several cues, broken after punctuation;
/// * s4 (B) is spoken fast after a pause: extended to the reading rate.
fn meeting() -> Vec<CaptionEvent> {
    vec![
        final_event(0, "s1", "A", "Thanks for joining.", 0.5, 0.3),
        final_event(1, "s2", "B", "Sure.", 2.0, 0.3),
        final_event(
            2,
            "s3",
            "A",
            "So the first item on the agenda is the release schedule, which slipped by two weeks \
             because the vendor delivered the new firmware late, and we still need to test it on \
             every device.",
            2.6,
            0.3,
        ),
        final_event(
            3,
            "s4",
            "B",
            "Understood, thanks for the detailed update.",
            15.0,
            0.15,
        ),
    ]
}

#[test]
fn hand_made_meeting_to_webvtt() {
    let cues = build_cues(&meeting(), &CueSettings::default()).unwrap();
    assert_eq!(
        to_vtt(&cues),
        "WEBVTT

1
00:00:00.500 --> 00:00:01.500
<v A>Thanks for joining.

2
00:00:02.000 --> 00:00:02.560
<v B>- Sure.

3
00:00:02.600 --> 00:00:05.860
<v A>- So the first item on the agenda
is the release schedule,

4
00:00:05.900 --> 00:00:09.760
<v A>which slipped by two weeks because the
vendor delivered the new firmware late,

5
00:00:09.800 --> 00:00:12.800
<v A>and we still need to test
it on every device.

6
00:00:15.000 --> 00:00:17.250
<v B>- Understood,
thanks for the detailed update.
"
    );
}

#[test]
fn hand_made_meeting_to_srt_with_names() {
    let settings = CueSettings {
        show_speaker_names: true,
        ..CueSettings::default()
    };
    let srt = to_srt(&build_cues(&meeting(), &settings).unwrap());
    // The labels count towards the reading rate: cues 1 and 6 stay up longer than without names.
    assert_eq!(
        srt,
        "1
00:00:00,500 --> 00:00:01,650
[A] Thanks for joining.

2
00:00:02,000 --> 00:00:02,560
[B] Sure.

3
00:00:02,600 --> 00:00:05,860
[A] So the first item on the agenda
is the release schedule,

4
00:00:05,900 --> 00:00:09,760
which slipped by two weeks because the
vendor delivered the new firmware late,

5
00:00:09,800 --> 00:00:12,800
and we still need to test
it on every device.

6
00:00:15,000 --> 00:00:17,350
[B] Understood,
thanks for the detailed update.

"
    );
}

#[test]
fn log_round_trip_validates_and_renders() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("captions.jsonl");
    let finals = meeting();
    // Each final preceded by a partial of its first word.
    let mut log = JsonlWriter::create(&path).unwrap();
    let mut seq = 0;
    let mut written = Vec::new();
    for f in &finals {
        let mut partial = f.clone();
        partial.kind = EventKind::Partial;
        partial.words.truncate(1);
        partial.text = partial.words[0].w.clone();
        partial.stable_text.clear();
        partial.end = partial.words[0].end;
        let mut fin = f.clone();
        fin.revision = 1;
        for mut ev in [partial, fin] {
            ev.seq = seq;
            seq += 1;
            log.write_event(&ev).unwrap();
            written.push(ev);
        }
    }
    drop(log);
    let events = read_log(&path).unwrap();
    assert_eq!(events, written);
    assert_eq!(validate_log(&events, 20.0), vec![]);
    // Too short an audio: the last segment is reported.
    let violations = validate_log(&events, 10.0);
    assert!(!violations.is_empty());
    assert!(
        violations
            .iter()
            .all(|v| v.to_string().contains("not within")),
        "{violations:?}"
    );

    let vtt = render_log(&path, SubtitleFormat::Vtt, &CueSettings::default()).unwrap();
    assert_eq!(
        vtt,
        to_vtt(&build_cues(&finals, &CueSettings::default()).unwrap())
    );
}

/// The shared simulated log (scorers' schema, no `seq`): consistent, and its cues respect the
/// layout bounds. Skipped when `../shared` is not beside the checkout.
#[test]
fn shared_simulated_log_renders_within_bounds() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/score/examples/dev_en_3spk_simulated.jsonl");
    if !path.exists() {
        eprintln!("skipped: {} not found", path.display());
        return;
    }
    let events = read_log(&path).unwrap();
    assert!(events.iter().any(|e| e.kind == EventKind::Partial));
    let duration = events.iter().map(|e| e.end).fold(0.0, f64::max);
    assert_eq!(validate_log(&events, duration), vec![]);
    let settings = CueSettings::default();
    let cues = build_cues(&events, &settings).unwrap();
    let finals = events.iter().filter(|e| e.is_final()).count();
    assert!(
        cues.len() >= finals / 2,
        "{} cues for {finals} finals",
        cues.len()
    );
    let words_in: usize = events
        .iter()
        .filter(|e| e.is_final())
        .map(|e| e.words.len())
        .sum();
    let words_out: usize = cues
        .iter()
        .map(|c| c.text().split_whitespace().filter(|w| *w != "-").count())
        .sum();
    assert_eq!(words_in, words_out);
    for pair in cues.windows(2) {
        assert!(
            pair[1].start >= pair[0].end + settings.gap_s - 1e-9,
            "{pair:?}"
        );
    }
    for (k, c) in cues.iter().enumerate() {
        assert!(c.lines.len() <= settings.max_lines);
        assert!(
            c.lines
                .iter()
                .all(|l| l.chars().count() <= settings.max_line_chars),
            "{c:?}"
        );
        // Shorter than the minimum or faster than the reading rate only when the next cue follows.
        let short = c.duration() < settings.min_duration_s - 1e-9
            || c.chars_per_second() > settings.max_chars_per_second + 1e-6;
        if short {
            let next = cues.get(k + 1).expect("the last cue is never cut short");
            assert!(
                next.start <= c.end + settings.gap_s + 0.001,
                "{c:?} / {next:?}"
            );
        }
    }
    let srt = render_log(&path, SubtitleFormat::Srt, &settings).unwrap();
    assert_eq!(srt.matches(" --> ").count(), cues.len());
}
