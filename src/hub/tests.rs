//! Behaviour of the hub as a whole: seqs, durability across restarts, resume, overflow policy,
//! per-client control. Synchronisation is by explicit channels and lockstep reads, never sleeps;
//! `timeout` only turns a hang into a failure.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::captions::{CaptionEvent, EventKind, Word};
use crate::protocol::{
    CaptionFilter, ClientMessage, ErrorCode, Frame, GapReason, Participant, ServerMessage, Speaker,
    close,
};

const WAIT: Duration = Duration::from_secs(60);

fn settings(dir: &Path) -> HubSettings {
    HubSettings {
        data_dir: dir.to_owned(),
        ring_capacity: 8,
        queue_capacity: 64,
        max_pending_finals: 16,
    }
}

fn event(kind: EventKind, track: &str, segment: &str, revision: u32) -> CaptionEvent {
    let text = format!("{track} {segment} r{revision}");
    CaptionEvent {
        seq: u64::from(revision),
        kind,
        segment_id: segment.into(),
        revision,
        track: track.into(),
        speaker: None,
        language: Some("en".into()),
        stable_text: if kind == EventKind::Final {
            text.clone()
        } else {
            String::new()
        },
        text,
        start: 1.0,
        end: 2.0,
        emitted_at: 2.5,
        words: vec![Word {
            w: "x".into(),
            start: 1.0,
            end: 2.0,
            speaker: None,
        }],
    }
}

fn partial(track: &str, segment: &str, revision: u32) -> CaptionEvent {
    event(EventKind::Partial, track, segment, revision)
}

fn fin(track: &str, segment: &str) -> CaptionEvent {
    event(EventKind::Final, track, segment, 9)
}

fn seg(i: usize) -> String {
    format!("s{i:04}")
}

async fn recv(sub: &mut Subscription) -> Arc<Frame> {
    match tokio::time::timeout(WAIT, sub.next()).await {
        Ok(Delivery::Message(f)) => f,
        Ok(Delivery::Closed(reason)) => panic!("closed: {reason:?}"),
        Err(_) => panic!("no message within {WAIT:?}"),
    }
}

/// Everything ready now (panics on a close).
fn ready(sub: &mut Subscription) -> Vec<Arc<Frame>> {
    std::iter::from_fn(|| sub.try_next())
        .map(|d| match d {
            Delivery::Message(f) => f,
            Delivery::Closed(reason) => panic!("closed: {reason:?}"),
        })
        .collect()
}

fn seqs(frames: &[Arc<Frame>]) -> Vec<u64> {
    frames.iter().filter_map(|f| f.seq()).collect()
}

fn caption_of(frame: &Frame) -> &CaptionEvent {
    match frame.message() {
        ServerMessage::Caption(c) => &c.event,
        other => panic!("not a caption: {other:?}"),
    }
}

fn resumed_of(frame: &Frame) -> (u64, u64, u64) {
    match frame.message() {
        ServerMessage::Resumed(r) => (r.from_seq, r.replayed, r.last_seq),
        other => panic!("not resumed: {other:?}"),
    }
}

fn resume(from: u64) -> SubscriberOptions {
    SubscriberOptions {
        resume_from: Some(from),
        ..SubscriberOptions::default()
    }
}

fn alice_and_bob() -> Vec<Participant> {
    vec![
        Participant {
            track: "alice".into(),
            participant: "u1".into(),
            name: "Alice".into(),
            speakers: vec![],
        },
        Participant {
            track: "bob".into(),
            participant: "u2".into(),
            name: "Bob".into(),
            speakers: vec![Speaker {
                label: "spk1".into(),
                name: "Bob".into(),
            }],
        },
    ]
}

#[tokio::test]
async fn seq_increases_strictly_across_all_message_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::open("r1", &settings(dir.path())).unwrap();
    let mut sub = hub.subscribe(SubscriberOptions::default()).await.unwrap();
    assert!(matches!(sub.hello().message(), ServerMessage::Hello(h) if h.last_seq == 0));
    let published = [
        hub.publish(partial("a", "s1", 0)).unwrap(),
        hub.publish(partial("a", "s1", 1)).unwrap(),
        hub.publish(fin("a", "s1")).unwrap(),
        hub.publish_gap("a", 3.0, 4.0, GapReason::AudioLost)
            .unwrap(),
        hub.publish_participants(alice_and_bob()).unwrap(),
        hub.publish(partial("b", "s1", 0)).unwrap(),
        hub.publish(fin("b", "s1")).unwrap(),
    ];
    assert!(published.windows(2).all(|w| w[0] < w[1]), "{published:?}");
    assert_eq!(published[0], 1);
    let got = seqs(&ready(&mut sub));
    assert!(got.windows(2).all(|w| w[0] < w[1]), "{got:?}");
    assert_eq!(got.last(), published.last());
    let stats = hub.stats();
    assert_eq!(
        (stats.published, stats.finals_logged, stats.gaps_logged),
        (7, 2, 1)
    );
    assert_eq!((stats.subscribers, stats.last_seq), (1, published[6]));
    drop(sub);
    assert_eq!(hub.stats().subscribers, 0);
}

#[tokio::test]
async fn the_log_survives_a_restart_and_resume_replays_exactly_the_missing_finals() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path());
    let mut finals = Vec::new();
    let before_restart = {
        let hub = Hub::open("r1", &s).unwrap();
        for i in 0..10 {
            hub.publish(partial("a", &seg(i), 0)).unwrap();
            finals.push(hub.publish(fin("a", &seg(i))).unwrap());
        }
        hub.publish(partial("a", &seg(10), 0)).unwrap();
        hub.last_seq()
    }; // dropping the last handle closes the hub and releases the log

    let hub = Hub::open("r1", &s).unwrap();
    assert!(hub.last_seq() >= before_restart);
    let text = std::fs::read_to_string(dir.path().join("r1").join(LOG_FILE_NAME)).unwrap();
    assert!(!text.contains("\"partial\""), "partials are not logged");
    for i in 10..13 {
        finals.push(hub.publish(fin("a", &seg(i))).unwrap());
    }
    assert!(
        finals[10] > before_restart,
        "seq continues after the restart"
    );
    assert!(finals.windows(2).all(|w| w[0] < w[1]));

    // the client had everything up to finals[k]; resume from the ring (k = 4: the last 8 durable
    // messages are finals[5..13]) and from disk (k = 1)
    for k in [4, 1] {
        let mut sub = hub.subscribe(resume(finals[k])).await.unwrap();
        let last = *finals.last().unwrap();
        hub.publish(fin("a", "live")).unwrap();
        let got = ready(&mut sub);
        let n = got.len();
        // exactly the missing finals: none missing, none twice, in order
        assert_eq!(seqs(&got[..n - 2]), finals[k + 1..], "k = {k}");
        let missing = (finals.len() - k - 1) as u64;
        assert_eq!(resumed_of(&got[n - 2]), (finals[k], missing, last));
        assert_eq!(caption_of(&got[n - 1]).segment_id, "live");
        finals.push(got[n - 1].seq().unwrap());
    }
}

#[tokio::test]
async fn a_torn_last_line_is_tolerated_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path());
    let mut finals = Vec::new();
    {
        let hub = Hub::open("r1", &s).unwrap();
        for i in 0..3 {
            finals.push(hub.publish(fin("a", &seg(i))).unwrap());
        }
    }
    let path = dir.path().join("r1").join(LOG_FILE_NAME);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    file.write_all(br#"{"type":"caption","room":"r1","seq":4,"event":{"seq":0,"ty"#)
        .unwrap();
    drop(file);

    let hub = Hub::open("r1", &s).unwrap();
    assert_eq!(hub.last_seq(), finals[2]);
    finals.push(hub.publish(fin("a", &seg(3))).unwrap());
    let mut sub = hub.subscribe(resume(0)).await.unwrap();
    let got = ready(&mut sub);
    assert_eq!(seqs(&got), finals);
    drop((sub, hub));
    // the file reads back clean
    let log = RoomLog::open(&path, "r1", 0).unwrap();
    assert_eq!(log.len(), 4);
}

#[tokio::test]
async fn resume_from_ring_and_from_disk_give_the_same_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::open("r1", &settings(dir.path())).unwrap();
    let mut durable = Vec::new();
    for i in 0..30 {
        hub.publish(partial("a", &seg(i), 0)).unwrap();
        durable.push(hub.publish(fin("a", &seg(i))).unwrap());
        if i % 7 == 0 {
            durable.push(hub.publish_gap("a", 0.0, 1.0, GapReason::Overload).unwrap());
        }
    }
    for from in [
        0,
        1,
        durable[3],
        durable[20],
        durable[30],
        *durable.last().unwrap(),
    ] {
        let mut sub = hub.subscribe(resume(from)).await.unwrap();
        let got = ready(&mut sub);
        let expected: Vec<u64> = durable.iter().copied().filter(|&s| s > from).collect();
        assert_eq!(seqs(&got), expected, "from {from}");
        assert_eq!(
            resumed_of(got.last().unwrap()),
            (from, expected.len() as u64, hub.last_seq())
        );
    }
    assert!(hub.stats().replayed > 0);
    match hub.subscribe(resume(hub.last_seq() + 1)).await {
        Err(SubscribeError::ResumeAhead { .. }) => {}
        other => panic!("{other:?}"),
    }
}

/// Reads until the final of segment `last` (and `resumed`, if one is expected); returns the room
/// seqs of finals, the `resumed` messages, every seq seen (partials included) and `hello.last_seq`.
async fn read_until(
    mut sub: Subscription,
    last: String,
    expect_resumed: bool,
) -> (Vec<u64>, Vec<(u64, u64, u64)>, Vec<u64>, u64) {
    let hello_last = match sub.hello().message() {
        ServerMessage::Hello(h) => h.last_seq,
        _ => unreachable!(),
    };
    let (mut finals, mut resumed, mut all) = (Vec::new(), Vec::new(), Vec::new());
    let mut seen_last = false;
    while !seen_last || (expect_resumed && resumed.is_empty()) {
        let f = recv(&mut sub).await;
        if let Some(seq) = f.seq() {
            all.push(seq);
        }
        match f.message() {
            ServerMessage::Caption(c) if c.event.is_final() => {
                finals.push(c.seq);
                seen_last |= c.event.segment_id == last;
            }
            ServerMessage::Resumed(r) => resumed.push((r.from_seq, r.replayed, r.last_seq)),
            _ => {}
        }
    }
    // nothing after the end (in particular no second copy of anything)
    assert!(sub.try_next().is_none());
    (finals, resumed, all, hello_last)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publisher_and_resuming_subscribers_miss_and_repeat_nothing() {
    const FINALS: usize = 240;
    const END: &str = "end";
    let dir = tempfile::tempdir().unwrap();
    let s = HubSettings {
        queue_capacity: 1024,
        max_pending_finals: 1000,
        ..settings(dir.path())
    };
    let hub = Hub::open("r1", &s).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let (ack_tx, ack_rx) = std::sync::mpsc::channel::<()>();
    let publisher = {
        let hub = hub.clone();
        std::thread::spawn(move || {
            let mut finals = Vec::new();
            for i in 0..FINALS {
                hub.publish(partial("a", &seg(i), 0)).unwrap();
                hub.publish(partial("a", &seg(i), 1)).unwrap();
                let seq = hub.publish(fin("a", &seg(i))).unwrap();
                finals.push(seq);
                if i % 20 == 10 {
                    // checkpoint: wait until the subscribers are about to join, then publish
                    // on while they subscribe and replay
                    tx.send(seq).unwrap();
                    ack_rx.recv().unwrap();
                }
            }
            finals
        })
    };
    let mut readers = Vec::new();
    while let Some(checkpoint) = rx.recv().await {
        ack_tx.send(()).unwrap();
        // far back (read from disk), just behind (ring, unless it moved on), live
        for (resume_from, partials) in [
            (Some(checkpoint / 4), false),
            (Some(checkpoint.saturating_sub(3)), false),
            (None, true),
        ] {
            let options = SubscriberOptions {
                resume_from,
                partials,
                ..SubscriberOptions::default()
            };
            let sub = hub.subscribe(options).await.unwrap();
            let reader = tokio::spawn(read_until(sub, END.into(), resume_from.is_some()));
            readers.push((resume_from, reader));
        }
    }
    // The readers stop at a final published only once every subscription above exists (the
    // channel closes when the publisher is done, after the last subscribe returned). Stopping
    // at the publisher's own last final (`seg(FINALS - 1)`) raced: after the last checkpoint
    // the publisher goes on with 9 more segments while the 2 resuming subscriptions replay
    // from disk, so the live subscriber could join after that final (hello `last_seq` = the
    // room's last seq), correctly receive nothing, and wait forever for it. Every reader still
    // has to get exactly the finals after its start, the end marker included.
    let hub_end = hub.clone();
    let finals = tokio::task::spawn_blocking(move || {
        let mut finals = publisher.join().unwrap();
        finals.push(hub_end.publish(fin("a", END)).unwrap());
        finals
    })
    .await
    .unwrap();
    assert_eq!(readers.len(), 36);
    for (resume_from, reader) in readers {
        let (got, resumed, all, hello_last) = reader.await.unwrap();
        let from = resume_from.unwrap_or(hello_last);
        let expected: Vec<u64> = finals.iter().copied().filter(|&s| s > from).collect();
        assert_eq!(got, expected, "resume_from {resume_from:?}");
        assert!(all.windows(2).all(|w| w[0] < w[1]), "seqs out of order");
        match resume_from {
            Some(n) => {
                assert_eq!(resumed.len(), 1);
                let (f, replayed, last) = resumed[0];
                assert_eq!(f, n);
                let before = got.iter().filter(|&&s| s <= last).count() as u64;
                assert_eq!(replayed, before, "replay ends exactly at last_seq");
            }
            None => assert!(resumed.is_empty()),
        }
    }
    assert_eq!(hub.stats().slow_consumer_closes, 0);
}

#[tokio::test]
async fn a_slow_subscriber_is_closed_while_a_fast_one_gets_every_final() {
    let dir = tempfile::tempdir().unwrap();
    let s = HubSettings {
        queue_capacity: 16,
        max_pending_finals: 4,
        ..settings(dir.path())
    };
    let hub = Hub::open("r1", &s).unwrap();
    let mut slow = hub.subscribe(SubscriberOptions::default()).await.unwrap();
    let mut fast = hub.subscribe(SubscriberOptions::default()).await.unwrap();
    let mut finals = Vec::new();
    for i in 0..40 {
        hub.publish(partial("a", &seg(i), 0)).unwrap();
        let seq = hub.publish(fin("a", &seg(i))).unwrap();
        finals.push(seq);
        // lockstep: the fast client reads before the next publish (its final, not its
        // partial, which the final superseded in its queue or which it read already)
        let mut f = recv(&mut fast).await;
        if f.seq() != Some(seq) {
            assert!(!caption_of(&f).is_final());
            f = recv(&mut fast).await;
        }
        assert_eq!(f.seq(), Some(seq));
        if i < 2 {
            // the slow client reads the first two finals, then stops reading
            let got = ready(&mut slow);
            assert_eq!(seqs(&got).last(), Some(&seq));
        }
        let closes = hub.stats().slow_consumer_closes;
        assert_eq!(closes, u64::from(i >= 6), "after final {i}");
    }
    assert_eq!(hub.stats().subscribers, 1);
    let expected = CloseReason::SlowConsumer {
        resume_from: finals[1],
    };
    assert_eq!(slow.try_next(), Some(Delivery::Closed(expected)));
    assert_eq!(
        tokio::time::timeout(WAIT, slow.next()).await.unwrap(),
        Delivery::Closed(expected)
    );
    assert_eq!(expected.code(), close::SLOW_CONSUMER);
    assert!(
        expected
            .reason()
            .ends_with(&format!("resume with from_seq={}", finals[1]))
    );

    // the client reconnects with resume: exactly what it missed
    let mut again = hub.subscribe(resume(finals[1])).await.unwrap();
    let got = ready(&mut again);
    assert_eq!(seqs(&got), finals[2..]);
    assert!(matches!(
        got.last().unwrap().message(),
        ServerMessage::Resumed(_)
    ));
}

#[tokio::test]
async fn queued_partials_coalesce_to_the_latest_revision() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::open("r1", &settings(dir.path())).unwrap();
    let mut sub = hub.subscribe(SubscriberOptions::default()).await.unwrap();
    hub.publish(partial("a", "s1", 0)).unwrap();
    hub.publish(partial("a", "s1", 1)).unwrap();
    hub.publish(partial("b", "s1", 0)).unwrap();
    let latest = hub.publish(partial("a", "s1", 2)).unwrap();
    assert_eq!(sub.queued(), 2);
    assert_eq!(hub.stats().coalesced_partials, 2);
    let got = ready(&mut sub);
    assert_eq!(got.len(), 2);
    assert_eq!(caption_of(&got[0]).track, "b");
    assert_eq!(got[1].seq(), Some(latest));
    assert_eq!(caption_of(&got[1]).revision, 2);

    // a final removes its segment's queued partials
    hub.publish(partial("a", "s2", 0)).unwrap();
    hub.publish(partial("b", "s2", 0)).unwrap();
    hub.publish(fin("a", "s2")).unwrap();
    let got = ready(&mut sub);
    let kinds: Vec<_> = got
        .iter()
        .map(|f| (caption_of(f).track.as_str(), caption_of(f).is_final()))
        .collect();
    assert_eq!(kinds, [("b", false), ("a", true)]);
    assert_eq!(hub.stats().coalesced_partials, 3);
}

#[tokio::test]
async fn captions_toggle_stops_and_restarts_live_delivery_without_replay() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::open("r1", &settings(dir.path())).unwrap();
    let mut sub = hub.subscribe(SubscriberOptions::default()).await.unwrap();
    let f0 = hub.publish(fin("a", "s0")).unwrap();
    assert_eq!(recv(&mut sub).await.seq(), Some(f0));

    assert_eq!(
        sub.control(ClientMessage::Captions { enabled: false })
            .await,
        None
    );
    hub.publish(fin("a", "s1")).unwrap();
    hub.publish(partial("a", "s2", 0)).unwrap();
    hub.publish_gap("a", 1.0, 2.0, GapReason::AudioLost)
        .unwrap();
    assert_eq!(sub.queued(), 0, "nothing is queued while off");
    let p = hub.publish_participants(alice_and_bob()).unwrap();
    let got = ready(&mut sub);
    assert_eq!(seqs(&got), [p], "participant lists still flow");

    sub.set_captions(true);
    assert_eq!(
        sub.resume_point(),
        hub.last_seq(),
        "what was skipped is not owed"
    );
    let f2 = hub.publish(fin("a", "s2")).unwrap();
    assert_eq!(seqs(&ready(&mut sub)), [f2], "live again, no replay of s1");

    // turning off drops what is queued
    hub.publish(fin("a", "s3")).unwrap();
    assert_eq!(sub.queued(), 1);
    sub.set_captions(false);
    assert!(sub.try_next().is_none());
}

#[tokio::test]
async fn partials_off_delivers_finals_only() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::open("r1", &settings(dir.path())).unwrap();
    let options = SubscriberOptions {
        partials: false,
        ..SubscriberOptions::default()
    };
    let mut sub = hub.subscribe(options).await.unwrap();
    hub.publish(partial("a", "s1", 0)).unwrap();
    let f = hub.publish(fin("a", "s1")).unwrap();
    assert_eq!(seqs(&ready(&mut sub)), [f]);

    sub.control(ClientMessage::Partials { enabled: true }).await;
    let p = hub.publish(partial("a", "s2", 0)).unwrap();
    assert_eq!(seqs(&ready(&mut sub)), [p]);
    hub.publish(partial("a", "s2", 1)).unwrap();
    sub.set_partials(false);
    assert!(sub.try_next().is_none(), "queued partials dropped");
}

#[tokio::test]
async fn filters_select_tracks_and_languages_live_and_in_replay() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::open("r1", &settings(dir.path())).unwrap();
    let options = SubscriberOptions {
        filter: CaptionFilter {
            tracks: Some(vec!["alice".into()]),
            languages: None,
        },
        ..SubscriberOptions::default()
    };
    let mut sub = hub.subscribe(options).await.unwrap();
    let a = hub.publish(fin("alice", "s1")).unwrap();
    hub.publish(fin("bob", "s1")).unwrap();
    hub.publish_gap("bob", 0.0, 1.0, GapReason::AudioLost)
        .unwrap();
    let ga = hub
        .publish_gap("alice", 0.0, 1.0, GapReason::AudioLost)
        .unwrap();
    let p = hub.publish_participants(alice_and_bob()).unwrap();
    assert_eq!(seqs(&ready(&mut sub)), [a, ga, p]);

    let filter = ClientMessage::Filter {
        tracks: None,
        languages: Some(vec!["fr".into()]),
    };
    sub.control(filter).await;
    hub.publish(fin("alice", "s2")).unwrap(); // en
    let mut fr = fin("bob", "s2");
    fr.language = Some("fr".into());
    let fr = hub.publish(fr).unwrap();
    let mut unknown = fin("bob", "s3");
    unknown.language = None;
    let unknown = hub.publish(unknown).unwrap();
    assert_eq!(seqs(&ready(&mut sub)), [fr, unknown]);

    let options = SubscriberOptions {
        filter: CaptionFilter {
            tracks: Some(vec!["bob".into()]),
            languages: None,
        },
        ..resume(0)
    };
    let mut bob = hub.subscribe(options).await.unwrap();
    let got = ready(&mut bob);
    let tracks: Vec<_> = got
        .iter()
        .filter_map(|f| match f.message() {
            ServerMessage::Caption(c) => Some(c.event.track.as_str()),
            ServerMessage::Gap(g) => Some(g.track.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(tracks, ["bob", "bob", "bob", "bob"]);
    assert_eq!(resumed_of(got.last().unwrap()).1, 5, "4 bob + participants");
}

#[tokio::test]
async fn subscribers_get_the_current_participants_once() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::open("r1", &settings(dir.path())).unwrap();
    hub.publish_participants(alice_and_bob()[..1].to_vec())
        .unwrap();
    let f2 = hub.publish(fin("alice", "s1")).unwrap();
    let p3 = hub.publish_participants(alice_and_bob()).unwrap();
    let f4 = hub.publish(fin("bob", "s1")).unwrap();

    let mut live = hub.subscribe(SubscriberOptions::default()).await.unwrap();
    assert!(
        matches!(live.hello().message(), ServerMessage::Hello(h) if h.tracks == ["alice", "bob"])
    );
    assert_eq!(seqs(&ready(&mut live)), [p3]);
    for (from, expected) in [
        (p3, vec![p3, f4]),
        (f2, vec![p3, f4]),
        (1, vec![f2, p3, f4]),
    ] {
        let mut sub = hub.subscribe(resume(from)).await.unwrap();
        assert_eq!(seqs(&ready(&mut sub)), expected, "from {from}");
    }
    // after a restart too
    drop((live, hub));
    let hub = Hub::open("r1", &settings(dir.path())).unwrap();
    let mut sub = hub.subscribe(SubscriberOptions::default()).await.unwrap();
    assert_eq!(seqs(&ready(&mut sub)), [p3]);
}

#[tokio::test]
async fn control_messages_answer_ping_and_refuse_impossible_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::open("r1", &settings(dir.path())).unwrap();
    let f1 = hub.publish(fin("a", "s1")).unwrap();
    let mut sub = hub.subscribe(SubscriberOptions::default()).await.unwrap();
    assert_eq!(
        sub.control(ClientMessage::Ping).await,
        Some(ServerMessage::Pong)
    );
    match sub.control(ClientMessage::Resume { from_seq: 99 }).await {
        Some(ServerMessage::Error(e)) => assert_eq!(e.code, ErrorCode::ResumeUnavailable),
        other => panic!("{other:?}"),
    }
    // still subscribed, live
    let f2 = hub.publish(fin("a", "s2")).unwrap();
    assert_eq!(seqs(&ready(&mut sub)), [f2]);
    // an in-place resume replays, keeping the knobs
    sub.set_partials(false);
    assert_eq!(
        sub.control(ClientMessage::Resume { from_seq: 0 }).await,
        None
    );
    assert_eq!(hub.stats().subscribers, 1);
    hub.publish(partial("a", "s3", 0)).unwrap();
    let f3 = hub.publish(fin("a", "s3")).unwrap();
    let got = ready(&mut sub);
    assert_eq!(seqs(&got), [f1, f2, f3]);
    assert_eq!(resumed_of(&got[2]), (0, 2, f2));
}

#[tokio::test]
async fn closing_drains_then_ends_subscriptions_and_releases_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path());
    let hub = Hub::open("r1", &s).unwrap();
    let mut sub = hub.subscribe(SubscriberOptions::default()).await.unwrap();
    let f1 = hub.publish(fin("a", "s1")).unwrap();
    let other = hub.clone();
    drop(hub);
    assert!(
        other.publish(fin("a", "s2")).is_ok(),
        "a clone keeps it open"
    );
    drop(other);
    assert_eq!(recv(&mut sub).await.seq(), Some(f1));
    assert_eq!(recv(&mut sub).await.seq(), Some(f1 + 1));
    let end = tokio::time::timeout(WAIT, sub.next()).await.unwrap();
    assert_eq!(end, Delivery::Closed(CloseReason::GoingAway));
    assert_eq!(CloseReason::GoingAway.code(), close::GOING_AWAY);

    // the log is free although the old subscription still exists
    let hub = Hub::open("r1", &s).unwrap();
    assert_eq!(hub.last_seq(), f1 + 1);
    assert!(matches!(
        Hub::open("r1", &s).unwrap_err(),
        HubError::Log(LogError::Locked { .. })
    ));
    hub.close();
    assert!(matches!(
        hub.publish(fin("a", "s3")),
        Err(HubError::Closed(_))
    ));
    assert!(matches!(
        hub.subscribe(SubscriberOptions::default()).await,
        Err(SubscribeError::Closed(_))
    ));
}

#[tokio::test]
async fn invalid_rooms_settings_and_events_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path());
    assert!(matches!(
        Hub::open("../x", &s).unwrap_err(),
        HubError::InvalidRoom { .. }
    ));
    let bad = HubSettings {
        max_pending_finals: 64,
        ..s.clone()
    };
    match Hub::open("r1", &bad).unwrap_err() {
        HubError::Settings(e) => assert_eq!(e.field, "max_pending_finals"),
        other => panic!("{other}"),
    }
    let hub = Hub::open("r1", &s).unwrap();
    let mut nan = fin("a", "s1");
    nan.words[0].end = f64::NAN;
    assert!(matches!(hub.publish(nan), Err(HubError::Invalid(_))));
    assert!(
        hub.publish_gap("a", 2.0, 1.0, GapReason::AudioLost)
            .is_err()
    );
    assert!(hub.publish_gap("", 0.0, 1.0, GapReason::AudioLost).is_err());
    assert_eq!(hub.last_seq(), 0, "refused messages use no seq");
}
