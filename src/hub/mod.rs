//! Caption delivery inside the service: one [`Hub`] per room numbers the room's messages, makes
//! the ones that must not be lost durable, and fans everything out to the room's subscribers
//! (caption clients), each with a bounded queue and an explicit overflow policy.
//!
//! A pure library: no sockets. The WebSocket layer opens a hub per room, gives each connection a
//! [`Subscription`] (sends [`Subscription::hello`], then whatever [`Subscription::next`] yields,
//! and feeds parsed client messages to [`Subscription::control`]); the captioning side calls
//! [`Hub::publish`], [`Hub::publish_gap`] and [`Hub::publish_participants`].
//!
//! Guarantees (the wire contract is `docs/protocol.md`):
//! * **Seq**: every room message (partial, final, gap, participant list) gets the next room seq,
//!   strictly increasing, across restarts too (see [`SEQ_RESERVE_BLOCK`]).
//! * **Durable before visible**: finals, gaps and participant lists are appended to
//!   `<data_dir>/<room>/captions.jsonl` and `sync_data`'d before any subscriber can see them
//!   ([`RoomLog`]).
//! * **Resume**: `resume_from = N` yields exactly the durable messages with seq > N, in order,
//!   from the in-memory ring or from the log, then `resumed`, then live messages; registration
//!   and the replay bound are taken under one lock, so nothing is missed or repeated however
//!   publishing interleaves.
//! * **Overflow** (per subscriber, [`HubSettings::queue_capacity`] bound): a lagging client's
//!   partials are coalesced to the latest revision per (track, segment), and a final removes its
//!   segment's queued partials; finals and gaps are never dropped silently: beyond
//!   [`HubSettings::max_pending_finals`] the subscription ends with
//!   [`CloseReason::SlowConsumer`] naming the seq to resume from. Publishing never waits for a
//!   client: it is O(subscribers) with short, non-blocking critical sections.
//! * **Per-client control**: captions on/off (nothing queued while off, no replay when turned
//!   back on), partials on/off, track/language filter.
//!
//! Latency: a partial costs its serialisation (once per room) plus one short queue operation per
//! subscriber; a final adds one `write` + `sync_data` of the room log (about 1-10 ms on SSDs) on
//! the publisher's thread before fan-out. A resume from the ring costs nothing; from disk one
//! sequential read of the missing range on a blocking thread.
//!
//! Example: `let hub = Hub::open("standup", &HubSettings::with_data_dir("rooms"))?;
//! hub.publish(event)?; let mut sub = hub.subscribe(SubscriberOptions::default()).await?;`

mod log;
mod queue;
mod room;
mod settings;

#[cfg(test)]
mod tests;

pub use log::{LOG_FILE_NAME, LogError, RoomLog};
pub use room::{
    CloseReason, Delivery, Hub, HubError, HubStats, SubscribeError, SubscriberOptions, Subscription,
};
pub use settings::{
    DEFAULT_DATA_DIR, DEFAULT_MAX_PENDING_FINALS, DEFAULT_QUEUE_CAPACITY, DEFAULT_RING_CAPACITY,
    HubSettings, MAX_ROOM_NAME_LEN, SEQ_RESERVE_BLOCK, validate_room_name,
};
