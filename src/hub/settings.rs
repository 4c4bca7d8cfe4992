//! The knobs of a room hub, with defaults as named constants, validated once at start.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::stream::InvalidSetting;

/// Default directory holding one sub-directory per room (`<data_dir>/<room>/captions.jsonl`).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/soustitre/rooms";
/// Default number of durable room messages (finals, gaps, participant lists) kept in memory for
/// `resume`; older ones are read back from the room log.
pub const DEFAULT_RING_CAPACITY: usize = 1024;
/// Default bound of a subscriber's queue, in messages of any kind.
pub const DEFAULT_QUEUE_CAPACITY: usize = 256;
/// Default number of finals and gaps a subscriber may have queued before it is closed as a slow
/// consumer (at roughly one final per second and speaker, about a minute of lag).
pub const DEFAULT_MAX_PENDING_FINALS: usize = 128;
/// Seqs reserved durably at a time for partials, so that seqs keep increasing across a restart
/// even though partials are not logged. A restart skips at most this many seqs.
pub const SEQ_RESERVE_BLOCK: u64 = 1024;
/// Longest room name.
pub const MAX_ROOM_NAME_LEN: usize = 128;

/// Largest accepted `ring_capacity`.
const MAX_RING_CAPACITY: usize = 1 << 20;
/// Largest accepted `queue_capacity`.
const MAX_QUEUE_CAPACITY: usize = 1 << 16;

/// Settings of the caption hubs (one hub per room, all with the same settings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HubSettings {
    /// Directory of the room logs; created if missing.
    pub data_dir: PathBuf,
    /// Durable room messages kept in memory for `resume` (0: always read the log).
    pub ring_capacity: usize,
    /// Bound of each subscriber's queue. Partials beyond it are dropped oldest first; finals
    /// beyond it close the subscriber as a slow consumer.
    pub queue_capacity: usize,
    /// Finals and gaps a subscriber may have queued; one more closes it as a slow consumer
    /// (it reconnects with `resume`). Must be below `queue_capacity`.
    pub max_pending_finals: usize,
}

impl Default for HubSettings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            ring_capacity: DEFAULT_RING_CAPACITY,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            max_pending_finals: DEFAULT_MAX_PENDING_FINALS,
        }
    }
}

impl HubSettings {
    /// Default settings with the room logs under `data_dir`.
    pub fn with_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            ..Self::default()
        }
    }

    /// Checks every knob; the error names the field.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let bad = |field, reason: String| Err(InvalidSetting { field, reason });
        if self.data_dir.as_os_str().is_empty() {
            return bad("data_dir", "is empty".into());
        }
        if self.ring_capacity > MAX_RING_CAPACITY {
            return bad(
                "ring_capacity",
                format!("{} is above {MAX_RING_CAPACITY}", self.ring_capacity),
            );
        }
        if !(2..=MAX_QUEUE_CAPACITY).contains(&self.queue_capacity) {
            return bad(
                "queue_capacity",
                format!(
                    "{} is outside 2..={MAX_QUEUE_CAPACITY}",
                    self.queue_capacity
                ),
            );
        }
        if self.max_pending_finals == 0 || self.max_pending_finals >= self.queue_capacity {
            return bad(
                "max_pending_finals",
                format!(
                    "{} must be at least 1 and below queue_capacity ({}), which also holds \
                     the partials",
                    self.max_pending_finals, self.queue_capacity
                ),
            );
        }
        Ok(())
    }
}

/// Checks a room name, which becomes a directory name: 1 to [`MAX_ROOM_NAME_LEN`] ASCII
/// letters, digits, `-`, `_` and `.`, not starting with `.` (no `..`, no hidden directories).
pub fn validate_room_name(room: &str) -> Result<(), String> {
    if room.is_empty() || room.len() > MAX_ROOM_NAME_LEN {
        return Err(format!("must be 1 to {MAX_ROOM_NAME_LEN} characters"));
    }
    if room.starts_with('.') {
        return Err("must not start with `.`".into());
    }
    match room
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        Some(c) => Err(format!(
            "contains {c:?} (allowed: ASCII letters, digits, `-`, `_`, `.`)"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        HubSettings::default().validate().unwrap();
        let s: HubSettings = serde_json::from_str(r#"{"ring_capacity": 0}"#).unwrap();
        assert_eq!(s.queue_capacity, DEFAULT_QUEUE_CAPACITY);
        s.validate().unwrap();
        assert!(serde_json::from_str::<HubSettings>(r#"{"ring": 3}"#).is_err());
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                HubSettings {
                    data_dir: PathBuf::new(),
                    ..HubSettings::default()
                },
                "data_dir",
            ),
            (
                HubSettings {
                    ring_capacity: usize::MAX,
                    ..HubSettings::default()
                },
                "ring_capacity",
            ),
            (
                HubSettings {
                    queue_capacity: 1,
                    ..HubSettings::default()
                },
                "queue_capacity",
            ),
            (
                HubSettings {
                    max_pending_finals: 0,
                    ..HubSettings::default()
                },
                "max_pending_finals",
            ),
            (
                HubSettings {
                    queue_capacity: 8,
                    max_pending_finals: 8,
                    ..HubSettings::default()
                },
                "max_pending_finals",
            ),
        ];
        for (settings, field) in cases {
            let err = settings.validate().unwrap_err();
            assert_eq!(err.field, field, "{err}");
            assert!(err.to_string().contains(field));
        }
    }

    #[test]
    fn room_names_cannot_escape_the_data_dir() {
        for ok in ["r1", "team-standup_2024.06", "A"] {
            validate_room_name(ok).unwrap();
        }
        for bad in [
            "", ".", "..", "../etc", "a/b", "a\\b", "é", ".hidden", "a b",
        ] {
            assert!(validate_room_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_room_name(&"x".repeat(MAX_ROOM_NAME_LEN + 1)).is_err());
    }
}
