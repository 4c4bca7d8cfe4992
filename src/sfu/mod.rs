//! Attaching soustitre to a meeting room on an SFU: it joins as a hidden, receive-only
//! participant, subscribes to every participant's audio, and hands each participant's audio to
//! that participant's track worker (the captioning loop), on one timeline per room.
//!
//! * [`media`]: the room's GStreamer pipeline, one receive-only `webrtcbin` per peer connection
//!   and one `pipelines/webrtc_audio.gst` branch per remote audio track.
//! * [`data`]: a send-only data-channel peer in the room pipeline (captions back into the SFU).
//! * [`livekit`]: LiveKit rooms: signalling, token minting, the attachment, and captions
//!   published back into the LiveKit room (verified against a stand-in only: see that module).
//! * [`janus`]: Janus VideoRoom over its WebSocket API (signalling, subscriptions to every
//!   publisher including later ones, reconnection), plus a webrtcbin publisher used to feed test
//!   meetings.
//! * [`whep`]: WHEP (RFC 9725) endpoints, each one participant's track (HTTP offer/answer,
//!   outages noticed on the media, reconnection).
//!
//! What an attachment reports goes to a [`RoomSink`] (the service's room): audio per participant,
//! participants leaving, SFU outages (gaps), connection status.
//!
//! # Faults
//! * The SFU connection drops (socket closed, session lost, Janus restarted): every peer is torn
//!   down (the track workers flush what was heard as finals), then the attachment reconnects with
//!   capped exponential back-off ([`BACKOFF_MIN`] doubling to [`BACKOFF_MAX`]) and subscribes
//!   again. The interval between the drop and the new subscriptions is reported to
//!   [`RoomSink::outage`] (a `gap` for every track of the room); nothing is made up over it.
//! * A failing peer (negotiation refused, ICE failure) is logged and retried at the next
//!   publisher update; it never takes down its room. A failing room never takes down the
//!   service: each attachment is its own task.

pub mod data;
pub mod janus;
pub mod livekit;
pub mod media;
pub mod whep;

use std::time::Duration;

use serde::Serialize;

use crate::media::AudioSource;

/// First reconnection delay after the SFU connection dropped.
pub const BACKOFF_MIN: Duration = Duration::from_millis(250);
/// Longest reconnection delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// The next reconnection delay: doubled, capped at [`BACKOFF_MAX`].
pub fn next_backoff(current: Duration) -> Duration {
    (current * 2).min(BACKOFF_MAX)
}

/// Resolves when `stop` turns true (or its sender is gone).
pub(crate) async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// A participant of the SFU room, as its signalling names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemoteParticipant {
    /// Track id in soustitre (stable across leave/rejoin and reconnections).
    pub track: String,
    /// Identity on the SFU (Janus feed id, LiveKit identity).
    pub identity: String,
    /// Display name.
    pub name: String,
}

/// Connection state of an attachment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttachState {
    Connecting,
    Connected,
    Reconnecting,
    Stopped,
}

/// What an attachment shows the operator.
#[derive(Debug, Clone, Serialize)]
pub struct AttachStatus {
    pub state: AttachState,
    /// Last connection error.
    pub error: Option<String>,
    /// Successful connections so far (1 + reconnections).
    pub connections: u64,
    /// Remote participants currently subscribed.
    pub participants: Vec<RemoteParticipant>,
    /// Captions published back into the SFU room (attachments that publish them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub captions: Option<CaptionStats>,
}

/// Counters of the captions an attachment publishes back into the SFU room.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CaptionStats {
    /// Caption events handed to the data channel.
    pub captions_sent: u64,
    /// Data packets sent (several per caption event).
    pub packets_sent: u64,
    /// Packets the data channel refused (closed, failed).
    pub send_errors: u64,
    /// Queued partials replaced by a newer revision of their segment.
    pub partials_superseded: u64,
    /// Partials dropped because the queue was full.
    pub partials_dropped: u64,
    /// Finals dropped because the queue was full of finals (each one logged as an error).
    pub finals_dropped: u64,
    /// Captions of tracks that are not participants of the SFU room (not published).
    pub unattributed: u64,
}

impl Default for AttachStatus {
    fn default() -> Self {
        Self {
            state: AttachState::Connecting,
            error: None,
            connections: 0,
            participants: Vec::new(),
            captions: None,
        }
    }
}

/// Where an attachment delivers what it receives. Implemented by the service's room.
pub trait RoomSink: Send + Sync + 'static {
    /// Audio of `participant` started flowing (first time, after a rejoin or a reconnection).
    fn audio(&self, participant: &RemoteParticipant, source: AudioSource);
    /// The participant list changed (joins, leaves).
    fn participants(&self, list: &[RemoteParticipant]);
    /// The SFU could not be reached from `from_s` to `to_s` (room timeline, seconds).
    fn outage(&self, from_s: f64, to_s: f64);
    /// Only `track` was cut off from `from_s` to `to_s` (an attachment whose participants have
    /// separate connections, like WHEP endpoints). By default, the whole room's outage.
    fn track_outage(&self, track: &str, from_s: f64, to_s: f64) {
        let _ = track;
        self.outage(from_s, to_s);
    }
    /// The attachment's status changed.
    fn status(&self, status: &AttachStatus);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let mut d = BACKOFF_MIN;
        let mut seen = vec![d];
        for _ in 0..10 {
            d = next_backoff(d);
            seen.push(d);
        }
        assert_eq!(seen[1], Duration::from_millis(500));
        assert_eq!(seen[2], Duration::from_secs(1));
        assert_eq!(*seen.last().unwrap(), BACKOFF_MAX);
        assert!(seen.windows(2).all(|w| w[1] >= w[0]));
    }
}
