//! Recognition quality on the dev corpus, through the whole product path, scored by the corpus's
//! WER scorer. Bounds: English ≤ 10 % with whisper-base (synthetic utterances, the English
//! meeting, real LibriVox recordings); French is reported, not bounded; non-speech gives no words.

use crate::common::*;
use soustitre::stream::{LanguageSetting, StreamSettings};

fn settings(lang: &str) -> StreamSettings {
    StreamSettings {
        language: lang.parse::<LanguageSetting>().unwrap(),
        ..Default::default()
    }
}

fn pooled(model: &str, lang: &str, files: &[&str]) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let mut pairs = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let events = caption_file(model, &corpus(&format!("{f}.wav")), &settings(lang));
        let log = dir.path().join(format!("{i}.jsonl"));
        write_log(&log, &events);
        let reference = ["stm", "txt"]
            .iter()
            .map(|x| corpus(&format!("{f}.{x}")))
            .find(|p| p.exists())
            .unwrap();
        pairs.push((reference, log));
    }
    wer_files(&pairs).0
}

#[test]
fn english_utterances_whisper_base() {
    let wer = pooled(
        "whisper-base",
        "en",
        &[
            "utterances/synth/en_01",
            "utterances/synth/en_02",
            "utterances/synth/en_03",
        ],
    );
    assert!(wer <= 0.10, "WER {:.1} %", wer * 100.0);
}

#[test]
fn english_meeting_whisper_base() {
    let wer = pooled("whisper-base", "en", &["meetings/en_3spk/meeting"]);
    assert!(wer <= 0.10, "WER {:.1} %", wer * 100.0);
}

#[test]
fn english_meeting_auto_language() {
    let events = caption_file(
        "whisper-base",
        &corpus("meetings/en_3spk/meeting.wav"),
        &settings("auto"),
    );
    assert!(
        finals(&events)
            .iter()
            .all(|e| e.language.as_deref() == Some("en")),
        "auto must lock on English"
    );
    let (wer, _, _) = wer(&corpus("meetings/en_3spk/meeting.stm"), &events);
    assert!(wer <= 0.10, "WER {:.1} %", wer * 100.0);
}

#[test]
fn real_librivox_recordings() {
    let wer = pooled(
        "whisper-base",
        "en",
        &[
            "utterances/real/librivox_0870",
            "utterances/real/librivox_0880",
            "utterances/real/librivox_0890",
        ],
    );
    assert!(wer <= 0.10, "WER {:.1} %", wer * 100.0);
}

#[test]
fn english_utterances_whisper_tiny_en() {
    let wer = pooled(
        "whisper-tiny.en",
        "en",
        &[
            "utterances/synth/en_01",
            "utterances/synth/en_02",
            "utterances/synth/en_03",
        ],
    );
    assert!(wer <= 0.15, "WER {:.1} %", wer * 100.0);
}

#[test]
fn french_utterances_are_transcribed_in_french() {
    // Whisper base is weak on synthetic French voices: the WER is reported, and the output must
    // at least be French text.
    let files = [
        "utterances/synth/fr_01",
        "utterances/synth/fr_02",
        "utterances/synth/fr_03",
    ];
    let wer = pooled("whisper-base", "fr", &files);
    eprintln!("French utterances, whisper-base: WER {:.1} %", wer * 100.0);
    for f in files {
        let events = caption_file(
            "whisper-base",
            &corpus(&format!("{f}.wav")),
            &settings("fr"),
        );
        let fin = finals(&events);
        assert!(!fin.is_empty(), "{f}: no final");
        assert!(fin.iter().all(|e| e.language.as_deref() == Some("fr")));
    }
    assert!(
        wer < 1.0,
        "French output unrelated to the reference: {:.1} %",
        wer * 100.0
    );
}

#[test]
fn french_detected_with_auto_language() {
    let events = caption_file(
        "whisper-base",
        &corpus("utterances/synth/fr_01.wav"),
        &settings("auto"),
    );
    let fin = finals(&events);
    assert!(!fin.is_empty());
    assert_eq!(fin[0].language.as_deref(), Some("fr"), "{:?}", fin[0].text);
}

#[test]
fn non_speech_gives_no_words() {
    for f in [
        "nonspeech/silence_10s.wav",
        "nonspeech/white_noise_m50dBFS_10s.wav",
        "nonspeech/tone440_noise_10s.wav",
    ] {
        for lang in ["en", "auto"] {
            let events = caption_file("whisper-base", &corpus(f), &settings(lang));
            assert_eq!(
                word_count(&events),
                0,
                "{f} ({lang}): {:?}",
                events.iter().map(|e| &e.text).collect::<Vec<_>>()
            );
        }
    }
}

/// Seconds of reference speech (STM turns) covered by the finals' [start, end] spans.
fn coverage(stm: &std::path::Path, events: &[soustitre::captions::CaptionEvent]) -> f64 {
    let text = std::fs::read_to_string(stm).unwrap();
    let turns: Vec<(f64, f64)> = text
        .lines()
        .filter(|l| !l.starts_with(";;") && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[3].parse().unwrap(), f[4].parse().unwrap())
        })
        .collect();
    let spans: Vec<(f64, f64)> = finals(events).iter().map(|e| (e.start, e.end)).collect();
    let step = 0.01;
    let (mut speech, mut covered) = (0.0, 0.0);
    let mut t = 0.0;
    let end = turns.iter().map(|x| x.1).fold(0.0, f64::max);
    while t < end {
        if turns.iter().any(|(a, b)| t >= *a && t < *b) {
            speech += step;
            // a final's span may start a little after the turn (word timing is estimated)
            if spans.iter().any(|(a, b)| t >= a - 0.5 && t < b + 0.5) {
                covered += step;
            }
        }
        t += step;
    }
    covered / speech
}

#[test]
fn meetings_lose_no_stretch_of_speech() {
    // whatever the language mix, finals must cover the speech: a window the decoder loops on is
    // split and decoded again rather than dropped
    for m in ["en_3spk", "fr_3spk", "mix_enfr_3spk"] {
        let events = caption_file(
            "whisper-base",
            &corpus(&format!("meetings/{m}/meeting.wav")),
            &settings("auto"),
        );
        let c = coverage(&corpus(&format!("meetings/{m}/meeting.stm")), &events);
        assert!(
            c >= 0.9,
            "{m}: finals cover {:.0} % of the reference speech",
            c * 100.0
        );
    }
}

#[test]
fn previous_text_does_not_leak_into_noise() {
    // two sentences, then silence, noise and a tone: the finals' text given as context to the
    // next decodes must not make the recognizer continue the conversation on non-speech
    let mut audio = read_wav(&corpus("utterances/synth/en_01.wav"));
    audio.extend(read_wav(&corpus("utterances/synth/en_02.wav")));
    let speech_s = audio.len() as f64 / 16_000.0;
    for f in [
        "nonspeech/silence_10s.wav",
        "nonspeech/white_noise_m50dBFS_10s.wav",
        "nonspeech/tone440_noise_10s.wav",
    ] {
        audio.extend(read_wav(&corpus(f)));
    }
    for lang in ["en", "auto"] {
        let s = settings(lang);
        assert!(s.condition_on_previous_text, "on by default");
        let mut c = engine("whisper-base")
            .captioner(s, "mix", Box::new(|| 0.0))
            .unwrap();
        let mut events = Vec::new();
        for chunk in audio.chunks(4_000) {
            c.push(chunk, false, &mut events).unwrap();
        }
        c.finish(&mut events).unwrap();
        let fin = finals(&events);
        let late: Vec<&str> = fin
            .iter()
            .flat_map(|e| e.words.iter())
            .filter(|w| w.start > speech_s + 0.5)
            .map(|w| w.w.as_str())
            .collect();
        assert!(late.is_empty(), "{lang}: words on non-speech: {late:?}");
        let text: Vec<&str> = fin.iter().map(|e| e.text.as_str()).collect();
        assert!(
            fin.len() >= 2 && text.join(" ").contains("passwords"),
            "{lang}: both sentences captioned: {text:?}"
        );
    }
}

#[test]
fn finals_end_where_the_speech_ends() {
    // a final's end is its last word's end: it must be the end of a reference turn, whoever
    // spoke, even when the decoder rounds its last timestamp (the English meeting has a final
    // whose last timestamp falls 1.2 s before its speech ends)
    let stm = corpus("meetings/en_3spk/meeting.stm");
    let turn_ends: Vec<f64> = std::fs::read_to_string(&stm)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with(";;") && !l.trim().is_empty())
        .map(|l| l.split_whitespace().nth(4).unwrap().parse().unwrap())
        .collect();
    let events = caption_file(
        "whisper-base",
        &corpus("meetings/en_3spk/meeting.wav"),
        &settings("en"),
    );
    let fin = finals(&events);
    assert!(fin.len() >= 6, "{} finals", fin.len());
    for e in fin {
        let nearest = turn_ends
            .iter()
            .map(|t| (e.end - t).abs())
            .fold(f64::MAX, f64::min);
        assert!(
            nearest <= 0.25,
            "final ending at {:.3} is {nearest:.3} s from any turn end: {:?}",
            e.end,
            e.text
        );
    }
}

#[test]
fn auto_language_list_must_be_known_to_the_model() {
    let s = StreamSettings {
        auto_languages: vec!["fr".into(), "zz".into()],
        ..settings("auto")
    };
    let err = match engine("whisper-base").captioner(s, "mix", Box::new(|| 0.0)) {
        Ok(_) => panic!("`zz` accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("zz") && err.contains("auto_languages"),
        "{err}"
    );
}

/// Captions a dev-corpus meeting with `language = auto`, partials on (input never pending).
fn caption_auto(meeting: &str) -> Vec<soustitre::captions::CaptionEvent> {
    caption_meeting(meeting, settings("auto")).0
}

/// Captions a dev-corpus meeting with `s` (input never pending): events and language cuts.
fn caption_meeting(
    meeting: &str,
    s: StreamSettings,
) -> (
    Vec<soustitre::captions::CaptionEvent>,
    soustitre::stream::CaptionerStats,
) {
    let audio = read_wav(&corpus(&format!("{meeting}/meeting.wav")));
    let mut c = engine("whisper-base")
        .captioner(s, "mix", Box::new(|| 0.0))
        .unwrap();
    let mut events: Vec<soustitre::captions::CaptionEvent> = Vec::new();
    for chunk in audio.chunks(320) {
        let (before, cuts) = (events.len(), c.stats().language_cuts);
        c.push(chunk, false, &mut events).unwrap();
        // a language cut follows a partial's probe, which waits for the next frame: the
        // partial is handed out (the push returns) before the probe runs
        if c.stats().language_cuts > cuts {
            assert!(
                events[before..].first().is_some_and(|e| e.is_final()),
                "a cut's final comes first in its push: {:?}",
                events[before..]
                    .iter()
                    .map(|e| (e.is_final(), e.text.clone()))
                    .collect::<Vec<_>>()
            );
        }
    }
    c.finish(&mut events).unwrap();
    (events, c.stats().clone())
}

/// For each reference turn in `language`: the share of its time under finals in that language.
fn covered_by_finals(
    meeting: &str,
    language: &str,
    events: &[soustitre::captions::CaptionEvent],
) -> Vec<f64> {
    reference_turns(meeting)
        .iter()
        .filter(|(_, _, l)| l == language)
        .map(|(s, t, _)| {
            let under: f64 = events
                .iter()
                .filter(|e| e.is_final() && e.language.as_deref() == Some(language))
                .map(|e| (e.end.min(*t) - e.start.max(*s)).max(0.0))
                .sum();
            under / (t - s)
        })
        .collect()
}

#[test]
fn language_change_cut_gives_each_language_its_final() {
    // one microphone, English and French turns with pauses shorter than the endpoint silence:
    // a segment spans turns of both languages; with the cut, each turn gets a final in its own
    // language
    let meeting = "meetings/mix_enfr_3spk";
    let mut s = settings("auto");
    s.language_change_cut = true;
    let (events, stats) = caption_meeting(meeting, s);
    let cuts = stats.language_cuts;
    let french = covered_by_finals(meeting, "fr", &events);
    let english = covered_by_finals(meeting, "en", &events);
    let half = |v: &[f64]| v.iter().filter(|c| **c >= 0.5).count();
    assert!(cuts >= 2, "{cuts} language cuts");
    assert!(
        half(&french) + 1 >= french.len(),
        "French turns under French finals: {french:.2?}"
    );
    assert!(
        half(&english) + 1 >= english.len(),
        "English turns under English finals: {english:.2?}"
    );
    for (lang, e) in with_expected_language(meeting, &events) {
        if e.is_final() {
            assert_eq!(e.language.as_deref(), Some(lang.as_str()), "{}", e.text);
        }
    }
    // without the cut, joints give these turns their own finals too (the decoder stops at the
    // end of each turn here); when the finals of a segment's parts were joined in one final
    // carrying one language, fewer French turns were under French finals
    let plain = caption_auto(meeting);
    let french_plain = covered_by_finals(meeting, "fr", &plain);
    assert!(
        half(&french_plain) + 1 >= french_plain.len(),
        "without the cut: {french_plain:.2?}; with it: {french:.2?}"
    );
}

#[test]
fn language_change_cut_leaves_one_language_alone() {
    // three English voices on one microphone: the probes hear English only, no cut is made
    let mut s = settings("auto");
    s.language_change_cut = true;
    let (events, stats) = caption_meeting("meetings/en_3spk", s);
    assert_eq!(stats.language_cuts, 0);
    let finals: Vec<_> = events.iter().filter(|e| e.is_final()).collect();
    assert!(finals.len() >= 5, "{} finals", finals.len());
    assert!(
        finals.iter().all(|e| e.language.as_deref() == Some("en")),
        "{:?}",
        finals
            .iter()
            .map(|e| (e.language.clone(), e.text.clone()))
            .collect::<Vec<_>>()
    );
}

#[test]
fn joints_keep_the_turns_that_follow_without_a_pause() {
    // one microphone, `auto`, no diarization, default settings: English and French turns follow
    // each other with pauses shorter than the endpoint silence, so a segment spans several
    // turns. The decoder stops at the end of one turn's sentence and, decoding in its language,
    // would drop the next turn or translate it; a joint closes the part it finished, and the
    // next turn is decoded on its own in its own language
    let meeting = "meetings/mix_enfr_3spk";
    let (events, stats) = caption_meeting(meeting, settings("auto"));
    let text = std::fs::read_to_string(corpus(&format!("{meeting}/meeting.json"))).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut shares = Vec::new();
    for u in v["utterances"].as_array().unwrap() {
        if u["language"] != "fr" {
            continue;
        }
        let (s, t) = (u["start"].as_f64().unwrap(), u["end"].as_f64().unwrap());
        let reference = plain_words(u["text"].as_str().unwrap());
        // the finals' words timed within the turn
        let heard: Vec<String> = events
            .iter()
            .filter(|e| e.is_final())
            .flat_map(|e| e.words.iter())
            .filter(|w| (w.start + w.end) / 2.0 >= s - 0.3 && (w.start + w.end) / 2.0 <= t + 0.3)
            .flat_map(|w| plain_words(&w.w))
            .collect();
        let found = reference.iter().filter(|w| heard.contains(w)).count();
        shares.push(found as f64 / reference.len() as f64);
    }
    assert_eq!(shares.len(), 4);
    // whisper-base is weak on these synthetic French voices: a quarter of a turn's words is
    // what a transcription (not a drop, not a translation) reaches on all of them but one
    let kept = shares.iter().filter(|s| **s >= 0.25).count();
    assert!(
        kept + 1 >= shares.len(),
        "share of each French turn's words in the finals: {shares:.2?}"
    );
    assert!(stats.joints >= 2, "{} joints", stats.joints);
    // each joint emits the final of the turn it closes, in that turn's language: a final's
    // words lie in reference turns of its own language (joined in one final, the first
    // segments mixed both, a third of their words under the other language's label)
    let turns = reference_turns(meeting);
    for e in events
        .iter()
        .filter(|e| e.is_final() && !e.words.is_empty())
    {
        let language = e.language.as_deref().unwrap();
        let own = e
            .words
            .iter()
            .filter(|w| {
                let mid = (w.start + w.end) / 2.0;
                turns
                    .iter()
                    .any(|(s, t, l)| mid >= s - 0.3 && mid <= t + 0.3 && l == language)
            })
            .count();
        assert!(
            own as f64 >= 0.8 * e.words.len() as f64,
            "final {} ({language}) has {own} of {} words in {language} turns: {}",
            e.segment_id,
            e.words.len(),
            e.text
        );
    }
}

/// Events whose span only overlaps reference turns of one language (by more than 0.3 s), as
/// (expected language, event); the others (turns of both languages) have no single answer.
fn with_expected_language<'a>(
    meeting: &str,
    events: &'a [soustitre::captions::CaptionEvent],
) -> Vec<(String, &'a soustitre::captions::CaptionEvent)> {
    let turns = reference_turns(meeting);
    events
        .iter()
        .filter_map(|e| {
            let mut langs: Vec<&String> = turns
                .iter()
                .filter(|(s, t, _)| e.end.min(*t) - e.start.max(*s) > 0.3)
                .map(|(_, _, l)| l)
                .collect();
            langs.sort();
            langs.dedup();
            match langs.as_slice() {
                [l] => Some(((*l).clone(), e)),
                _ => None,
            }
        })
        .collect()
}

#[test]
fn auto_finals_keep_the_language_of_their_partials() {
    // a French turn right after an English one: its partials switch to French, and its final
    // must not fall back to the English of the previous turn (an English "translation")
    for meeting in ["meetings/fr_3spk", "meetings/mix_enfr_3spk"] {
        let events = caption_auto(meeting);
        let finals: Vec<_> = with_expected_language(meeting, &events)
            .into_iter()
            .filter(|(_, e)| e.is_final())
            .collect();
        assert!(
            finals.len() >= 3,
            "{meeting}: {} finals checked",
            finals.len()
        );
        for (lang, e) in finals {
            assert_eq!(
                e.language.as_deref(),
                Some(lang.as_str()),
                "{meeting} [{:.2}-{:.2}]: {}",
                e.start,
                e.end,
                e.text
            );
        }
    }
}

/// A partial in the wrong language: the turn's language, the partial's, its text.
type Misheard = (String, Option<String>, String);

/// Partials of `events` lying within one reference turn (at least 80 % of their span): how
/// many carry its language (English, French), and the others.
fn partial_languages(
    meeting: &str,
    events: &[soustitre::captions::CaptionEvent],
) -> ([usize; 2], Vec<Misheard>) {
    let turns = reference_turns(meeting);
    let (mut right, mut wrong) = ([0usize; 2], Vec::new());
    for e in events.iter().filter(|e| !e.is_final()) {
        let (overlap, lang) = turns
            .iter()
            .map(|(s, t, l)| ((e.end.min(*t) - e.start.max(*s)).max(0.0), l))
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .unwrap();
        if overlap < 0.8 * (e.end - e.start) {
            continue;
        }
        if e.language.as_deref() == Some(lang.as_str()) {
            right[usize::from(lang == "fr")] += 1;
        } else {
            wrong.push((lang.clone(), e.language.clone(), e.text.clone()));
        }
    }
    (right, wrong)
}

#[test]
fn auto_partials_follow_the_spoken_language() {
    // one microphone, English and French turns: each partial is decoded in the language being
    // spoken, not in the one the stream was locked on before (which would show an English
    // translation of French speech, or drop it)
    let meeting = "meetings/mix_enfr_3spk";
    let (right, wrong) = partial_languages(meeting, &caption_auto(meeting));
    assert!(
        right[0] >= 10 && right[1] >= 5,
        "partials in the right language (en, fr): {right:?}, wrong: {wrong:?}"
    );
    let total = right[0] + right[1] + wrong.len();
    assert!(
        wrong.len() * 10 <= total,
        "{} of {total} partials in the wrong language: {wrong:?}",
        wrong.len()
    );
}

#[test]
fn auto_partials_of_french_turns_are_not_taken_for_english() {
    // a French meeting: the first second of a French turn is often identified as English
    // (Whisper leans towards English on short audio); the French the stream is locked on must
    // not give way to such a guess
    let meeting = "meetings/fr_3spk";
    let (right, wrong) = partial_languages(meeting, &caption_auto(meeting));
    let total = right[0] + right[1] + wrong.len();
    // (before English needed more confidence on short audio: 33 of 53)
    let in_french = right[1] + wrong.iter().filter(|w| w.0 == "fr").count();
    assert!(
        right[1] * 4 >= in_french * 3,
        "{} of {in_french} partials of French turns in French",
        right[1]
    );
    assert!(
        wrong.len() * 5 <= total,
        "{} of {total} partials in the wrong language: {wrong:?}",
        wrong.len()
    );
}

/// Pooled (streaming errors, whole-segment offline errors, reference words) of `files`; with a
/// fixed language the streaming finals must also read exactly as the whole-segment decode.
fn streaming_and_whole_segment(lang: &str, files: &[&str]) -> (u64, u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let (mut streamed, mut offline) = (Vec::new(), Vec::new());
    for (i, f) in files.iter().enumerate() {
        let wav = corpus(&format!("{f}.wav"));
        let reference = ["stm", "txt"]
            .iter()
            .map(|x| corpus(&format!("{f}.{x}")))
            .find(|p| p.exists())
            .unwrap();
        let events = caption_file("whisper-base", &wav, &settings(lang));
        let log = dir.path().join(format!("{i}.jsonl"));
        write_log(&log, &events);
        streamed.push((reference.clone(), log));
        let text = soustitre::bench::segment_offline_transcript(
            engine("whisper-base"),
            &wav,
            &settings(lang),
        )
        .unwrap();
        if lang != "auto" {
            // one language, segments under max_segment_s: the partials (trims) never change a
            // final, so captioning live reads the same as waiting for every segment's end
            let finals: Vec<&str> = finals(&events)
                .iter()
                .map(|e| e.text.as_str())
                .filter(|t| !t.is_empty())
                .collect();
            assert_eq!(finals.join(" "), text, "{f}");
        }
        let txt = dir.path().join(format!("{i}.txt"));
        std::fs::write(&txt, format!("{text}\n")).unwrap();
        offline.push((reference, txt));
    }
    let (_, s, n) = wer_files(&streamed);
    let (_, o, _) = wer_files(&offline);
    (s, o, n)
}

#[test]
fn streaming_costs_at_most_five_percent_of_the_whole_segment_errors() {
    // The benchmark's streaming/offline ratio (target <= 1.05), on the single utterances and the
    // English meeting. With `auto` on the bilingual meetings the two differ (joints, the language
    // the partials settled on, forced cuts at 15 s instead of 28 s): the benchmark reports them.
    for (lang, files) in [
        (
            "en",
            &[
                "utterances/synth/en_01",
                "utterances/synth/en_02",
                "utterances/synth/en_03",
                "meetings/en_3spk/meeting",
            ][..],
        ),
        (
            "en",
            &[
                "utterances/real/librivox_0870",
                "utterances/real/librivox_0880",
                "utterances/real/librivox_0890",
            ][..],
        ),
        (
            "fr",
            &[
                "utterances/synth/fr_01",
                "utterances/synth/fr_02",
                "utterances/synth/fr_03",
            ][..],
        ),
    ] {
        let (streaming, offline, words) = streaming_and_whole_segment(lang, files);
        assert!(words > 0);
        assert!(
            streaming as f64 <= 1.05 * offline as f64,
            "{files:?}: {streaming} errors streaming, {offline} decoding whole segments"
        );
    }
}
