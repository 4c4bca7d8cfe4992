//! Attachment to selective forwarding units (SFUs).

pub mod livekit;
