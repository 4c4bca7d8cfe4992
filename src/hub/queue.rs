//! A subscriber's bounded queue and its overflow policy.
//!
//! * A partial replaces any queued partial of the same (track, segment): a lagging client gets
//!   the latest revision only. The newer one goes to the back, so the queue stays in seq order.
//! * A final removes the queued partials of its segment (the final supersedes them).
//! * A participant list replaces a queued older one (each list is complete).
//! * Finals and gaps are never dropped: one more than `max_pending_finals` queued is an
//!   [`Push::Overflow`], on which the hub closes the subscriber as a slow consumer.
//! * Above `capacity` messages, the oldest partial is dropped.
//!
//! Each push is O(queue length), which stays small for clients that keep up.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::protocol::{Frame, ServerMessage};

/// What the policy needs to know about a message.
enum Class<'a> {
    Partial { track: &'a str, segment: &'a str },
    Final { track: &'a str, segment: &'a str },
    Gap,
    Participants,
    Other,
}

fn classify(msg: &ServerMessage) -> Class<'_> {
    match msg {
        ServerMessage::Caption(c) if c.event.is_final() => Class::Final {
            track: &c.event.track,
            segment: &c.event.segment_id,
        },
        ServerMessage::Caption(c) => Class::Partial {
            track: &c.event.track,
            segment: &c.event.segment_id,
        },
        ServerMessage::Gap(_) => Class::Gap,
        ServerMessage::Participants(_) => Class::Participants,
        _ => Class::Other,
    }
}

fn is_partial_of(frame: &Frame, track: &str, segment: &str) -> bool {
    matches!(classify(frame.message()),
        Class::Partial { track: t, segment: s } if t == track && s == segment)
}

fn counts_as_final(frame: &Frame) -> bool {
    matches!(classify(frame.message()), Class::Final { .. } | Class::Gap)
}

/// Outcome of [`SubQueue::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Push {
    /// Queued; `coalesced` older partials were replaced and `dropped` were dropped for room.
    Queued { coalesced: u64, dropped: u64 },
    /// Too many finals pending: the subscriber must be closed.
    Overflow,
}

/// A bounded per-subscriber queue (see the module doc for the policy).
#[derive(Debug)]
pub(crate) struct SubQueue {
    items: VecDeque<Arc<Frame>>,
    pending_finals: usize,
    capacity: usize,
    max_pending_finals: usize,
}

impl SubQueue {
    pub(crate) fn new(capacity: usize, max_pending_finals: usize) -> Self {
        Self {
            items: VecDeque::new(),
            pending_finals: 0,
            capacity,
            max_pending_finals,
        }
    }

    pub(crate) fn push(&mut self, frame: Arc<Frame>) -> Push {
        let before = self.items.len();
        match classify(frame.message()) {
            Class::Partial { track, segment } | Class::Final { track, segment } => {
                self.items.retain(|f| !is_partial_of(f, track, segment));
            }
            Class::Participants => self
                .items
                .retain(|f| !matches!(f.message(), ServerMessage::Participants(_))),
            Class::Gap | Class::Other => {}
        }
        let coalesced = (before - self.items.len()) as u64;
        if counts_as_final(&frame) {
            if self.pending_finals >= self.max_pending_finals {
                return Push::Overflow;
            }
            self.pending_finals += 1;
        }
        self.items.push_back(frame);
        let mut dropped = 0;
        while self.items.len() > self.capacity {
            let oldest_partial = self
                .items
                .iter()
                .position(|f| matches!(classify(f.message()), Class::Partial { .. }));
            match oldest_partial {
                Some(i) => {
                    self.items.remove(i);
                    dropped += 1;
                }
                None => return Push::Overflow,
            }
        }
        Push::Queued { coalesced, dropped }
    }

    pub(crate) fn pop(&mut self) -> Option<Arc<Frame>> {
        let frame = self.items.pop_front()?;
        if counts_as_final(&frame) {
            self.pending_finals -= 1;
        }
        Some(frame)
    }

    /// Keep only the messages `keep` accepts.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&ServerMessage) -> bool) {
        self.items.retain(|f| keep(f.message()));
        self.pending_finals = self.items.iter().filter(|f| counts_as_final(f)).count();
    }

    pub(crate) fn clear(&mut self) {
        self.items.clear();
        self.pending_finals = 0;
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::captions::{CaptionEvent, EventKind};
    use crate::protocol::{Caption, Gap, GapReason, Participants};

    pub(crate) fn caption(seq: u64, kind: EventKind, track: &str, segment: &str) -> Arc<Frame> {
        Arc::new(Frame::new(ServerMessage::Caption(Caption {
            room: "r".into(),
            seq,
            event: CaptionEvent {
                seq,
                kind,
                segment_id: segment.into(),
                revision: seq as u32,
                track: track.into(),
                speaker: None,
                language: None,
                text: "x".into(),
                stable_text: String::new(),
                start: 0.0,
                end: 1.0,
                emitted_at: 1.0,
                words: vec![],
            },
        })))
    }

    fn gap(seq: u64) -> Arc<Frame> {
        Arc::new(Frame::new(ServerMessage::Gap(Gap {
            room: "r".into(),
            seq,
            track: "a".into(),
            from_s: 0.0,
            to_s: 1.0,
            reason: GapReason::AudioLost,
        })))
    }

    fn participants(seq: u64) -> Arc<Frame> {
        Arc::new(Frame::new(ServerMessage::Participants(Participants {
            room: "r".into(),
            seq,
            participants: vec![],
        })))
    }

    fn drain(q: &mut SubQueue) -> Vec<u64> {
        std::iter::from_fn(|| q.pop())
            .map(|f| f.seq().unwrap())
            .collect()
    }

    use EventKind::{Final, Partial};

    #[test]
    fn partials_coalesce_to_the_latest_revision_in_seq_order() {
        let mut q = SubQueue::new(16, 4);
        assert_eq!(
            q.push(caption(1, Partial, "a", "s1")),
            Push::Queued {
                coalesced: 0,
                dropped: 0
            }
        );
        q.push(caption(2, Partial, "b", "s1")); // other track, same segment id
        assert_eq!(
            q.push(caption(3, Partial, "a", "s1")),
            Push::Queued {
                coalesced: 1,
                dropped: 0
            }
        );
        q.push(caption(4, Partial, "a", "s2"));
        assert_eq!(drain(&mut q), [2, 3, 4]);
    }

    #[test]
    fn a_final_removes_the_partials_of_its_segment() {
        let mut q = SubQueue::new(16, 4);
        q.push(caption(1, Partial, "a", "s1"));
        q.push(caption(2, Partial, "a", "s2"));
        assert_eq!(
            q.push(caption(3, Final, "a", "s1")),
            Push::Queued {
                coalesced: 1,
                dropped: 0
            }
        );
        assert_eq!(drain(&mut q), [2, 3]);
    }

    #[test]
    fn participant_lists_replace_each_other() {
        let mut q = SubQueue::new(16, 4);
        q.push(participants(1));
        q.push(caption(2, Final, "a", "s1"));
        q.push(participants(3));
        assert_eq!(drain(&mut q), [2, 3]);
    }

    #[test]
    fn finals_and_gaps_overflow_past_the_bound_never_drop() {
        let mut q = SubQueue::new(16, 3);
        q.push(caption(1, Final, "a", "s1"));
        q.push(gap(2));
        q.push(caption(3, Final, "a", "s3"));
        assert_eq!(q.push(caption(4, Final, "a", "s4")), Push::Overflow);
        assert_eq!(q.pop().unwrap().seq(), Some(1));
        assert!(matches!(
            q.push(caption(5, Final, "a", "s5")),
            Push::Queued { .. }
        ));
        assert_eq!(drain(&mut q), [2, 3, 5]);
    }

    #[test]
    fn oldest_partial_is_dropped_at_capacity() {
        let mut q = SubQueue::new(3, 2);
        q.push(caption(1, Partial, "a", "s1"));
        q.push(caption(2, Partial, "b", "s1"));
        q.push(caption(3, Final, "c", "s1"));
        assert_eq!(
            q.push(caption(4, Partial, "d", "s1")),
            Push::Queued {
                coalesced: 0,
                dropped: 1
            }
        );
        assert_eq!(q.len(), 3);
        assert_eq!(drain(&mut q), [2, 3, 4]);
    }

    #[test]
    fn retain_recounts_pending_finals() {
        let mut q = SubQueue::new(16, 2);
        q.push(caption(1, Final, "a", "s1"));
        q.push(caption(2, Final, "b", "s1"));
        q.retain(|m| matches!(m, ServerMessage::Caption(c) if c.event.track == "b"));
        q.push(caption(3, Final, "a", "s2"));
        assert_eq!(drain(&mut q), [2, 3]);
        q.push(caption(4, Final, "a", "s3"));
        q.clear();
        assert_eq!(q.len(), 0);
        q.push(caption(5, Final, "a", "s4"));
        q.push(caption(6, Final, "a", "s5"));
        assert_eq!(drain(&mut q), [5, 6]);
    }
}
