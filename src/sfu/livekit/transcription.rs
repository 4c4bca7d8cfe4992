//! Captions as LiveKit data packets, in the two forms LiveKit clients display natively.
//!
//! * **Text stream** on topic [`TRANSCRIPTION_TOPIC`] (what current LiveKit SDKs and agents
//!   use): one stream per caption revision, `DataStream.Header` → `DataStream.Chunk`s →
//!   `DataStream.Trailer`. The header carries the attributes [`ATTR_SEGMENT_ID`],
//!   [`ATTR_TRANSCRIBED_TRACK_ID`] and [`ATTR_TRANSCRIPTION_FINAL`] (`"true"` / `"false"`), and
//!   the packets carry the *speaker's* identity as `participant_identity`, so clients attribute
//!   the text to the person who spoke. Each revision holds the full current text of the
//!   segment (clients replace the previous revision with the same segment id).
//! * **Legacy `Transcription` packet** (older SDKs): one packet per revision with one segment
//!   (`id`, `text`, `start_time`/`end_time` in milliseconds of stream audio time, `final`,
//!   `language`), sent as the sidecar itself with `transcribed_participant_identity` set to the
//!   speaker.
//!
//! Every packet is *reliable* (the `_reliable` data channel), partials included: a text stream
//! spans several packets and a lost chunk would leave the stream incomplete, and a partial is
//! small. Packets get increasing `sequence` numbers, as LiveKit SDKs number reliable packets.
//!
//! Segment ids are made room-unique as `<track_sid>/<segment_id>` (caption segment ids are only
//! unique per track).

use livekit_protocol as proto;
use prost::Message;
use std::collections::HashMap;

use super::session::{JoinInfo, RemoteTrack};
use crate::captions::CaptionEvent;

/// Topic of transcription text streams.
pub const TRANSCRIPTION_TOPIC: &str = "lk.transcription";
/// Header attribute: the segment id (shared by every revision of a segment).
pub const ATTR_SEGMENT_ID: &str = "lk.segment_id";
/// Header attribute: sid of the transcribed track.
pub const ATTR_TRANSCRIBED_TRACK_ID: &str = "lk.transcribed_track_id";
/// Header attribute: `"true"` on the final revision, `"false"` on partials.
pub const ATTR_TRANSCRIPTION_FINAL: &str = "lk.transcription_final";
/// MIME type of text streams.
pub const TEXT_MIME_TYPE: &str = "text/plain";
/// Largest chunk content, bytes (the value LiveKit's own stream writer uses).
pub const DEFAULT_CHUNK_SIZE: usize = 15_000;
/// Smallest chunk size accepted (a UTF-8 character is up to 4 bytes).
pub const MIN_CHUNK_SIZE: usize = 16;

/// Which forms to publish and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishSettings {
    /// Text streams on `lk.transcription`.
    pub text_streams: bool,
    /// Legacy `Transcription` packets.
    pub legacy_transcription: bool,
    /// Chunk content size, bytes (at least [`MIN_CHUNK_SIZE`]).
    pub chunk_size: usize,
}

impl Default for PublishSettings {
    fn default() -> Self {
        Self {
            text_streams: true,
            legacy_transcription: true,
            chunk_size: DEFAULT_CHUNK_SIZE,
        }
    }
}

/// Settings that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TranscriptionError {
    #[error("chunk_size {0} is below {MIN_CHUNK_SIZE} bytes")]
    ChunkSize(usize),
    #[error("the sidecar's own identity is empty")]
    EmptyIdentity,
}

/// Whose speech a caption is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Speaker<'a> {
    /// Identity of the participant who spoke.
    pub identity: &'a str,
    /// Sid of the track that was transcribed (`TR_...`).
    pub track_sid: &'a str,
}

impl<'a> From<&'a RemoteTrack> for Speaker<'a> {
    fn from(track: &'a RemoteTrack) -> Self {
        Speaker {
            identity: &track.identity,
            track_sid: &track.track_sid,
        }
    }
}

/// Builds the data packets of caption events, numbering them.
#[derive(Debug, Clone)]
pub struct CaptionPublisher {
    local_identity: String,
    local_sid: String,
    stream_tag: String,
    settings: PublishSettings,
    next_sequence: u32,
}

impl CaptionPublisher {
    /// `local_identity` / `local_sid`: the sidecar's own (from the join response).
    /// `stream_tag`: a string unique to this connection (e.g. random), prefixed to stream ids.
    pub fn new(
        local_identity: &str,
        local_sid: &str,
        stream_tag: &str,
        settings: PublishSettings,
    ) -> Result<Self, TranscriptionError> {
        if settings.chunk_size < MIN_CHUNK_SIZE {
            return Err(TranscriptionError::ChunkSize(settings.chunk_size));
        }
        if local_identity.is_empty() {
            return Err(TranscriptionError::EmptyIdentity);
        }
        Ok(Self {
            local_identity: local_identity.to_string(),
            local_sid: local_sid.to_string(),
            stream_tag: stream_tag.to_string(),
            settings,
            next_sequence: 1,
        })
    }

    /// A publisher for the connection described by `join`: the sidecar's identity and sid
    /// from the join response, the sid (new at every join) as stream id prefix.
    pub fn for_join(
        join: &JoinInfo,
        settings: PublishSettings,
    ) -> Result<Self, TranscriptionError> {
        Self::new(
            &join.identity,
            &join.participant_sid,
            &join.participant_sid,
            settings,
        )
    }

    /// The room-unique segment id of `event` spoken on `speaker`'s track.
    pub fn segment_id(event: &CaptionEvent, speaker: Speaker<'_>) -> String {
        format!("{}/{}", speaker.track_sid, event.segment_id)
    }

    /// The packets for one caption event, in sending order: the text stream (header, chunks,
    /// trailer), then the legacy transcription packet. `destinations`: identities to deliver
    /// to; empty means everyone in the room. `now_unix_ms`: the header timestamp.
    pub fn packets(
        &mut self,
        event: &CaptionEvent,
        speaker: Speaker<'_>,
        destinations: &[String],
        now_unix_ms: i64,
    ) -> Vec<proto::DataPacket> {
        let mut out = Vec::new();
        let segment_id = Self::segment_id(event, speaker);
        if self.settings.text_streams {
            let stream_id = format!("{}-{}-{}", self.stream_tag, speaker.track_sid, event.seq);
            let attributes = HashMap::from([
                (ATTR_SEGMENT_ID.to_string(), segment_id.clone()),
                (
                    ATTR_TRANSCRIBED_TRACK_ID.to_string(),
                    speaker.track_sid.to_string(),
                ),
                (
                    ATTR_TRANSCRIPTION_FINAL.to_string(),
                    event.is_final().to_string(),
                ),
            ]);
            #[allow(deprecated)]
            let header = proto::data_stream::Header {
                stream_id: stream_id.clone(),
                timestamp: now_unix_ms,
                topic: TRANSCRIPTION_TOPIC.to_string(),
                mime_type: TEXT_MIME_TYPE.to_string(),
                total_length: Some(event.text.len() as u64),
                encryption_type: 0,
                attributes,
                inline_content: None,
                compression: proto::data_stream::CompressionType::None as i32,
                content_header: Some(proto::data_stream::header::ContentHeader::TextHeader(
                    proto::data_stream::TextHeader {
                        operation_type: proto::data_stream::OperationType::Create as i32,
                        version: i32::try_from(event.revision).unwrap_or(i32::MAX),
                        reply_to_stream_id: String::new(),
                        attached_stream_ids: Vec::new(),
                        generated: true,
                    },
                )),
            };
            let value = proto::data_packet::Value::StreamHeader(header);
            out.push(self.packet(speaker.identity, "", destinations, value));
            for (i, chunk) in utf8_chunks(&event.text, self.settings.chunk_size).enumerate() {
                #[allow(deprecated)]
                let value = proto::data_packet::Value::StreamChunk(proto::data_stream::Chunk {
                    stream_id: stream_id.clone(),
                    chunk_index: i as u64,
                    content: chunk.as_bytes().to_vec(),
                    version: 0,
                    iv: None,
                });
                out.push(self.packet(speaker.identity, "", destinations, value));
            }
            let value = proto::data_packet::Value::StreamTrailer(proto::data_stream::Trailer {
                stream_id,
                reason: String::new(),
                attributes: HashMap::new(),
            });
            out.push(self.packet(speaker.identity, "", destinations, value));
        }
        if self.settings.legacy_transcription {
            let value = proto::data_packet::Value::Transcription(proto::Transcription {
                transcribed_participant_identity: speaker.identity.to_string(),
                track_id: speaker.track_sid.to_string(),
                segments: vec![proto::TranscriptionSegment {
                    id: segment_id,
                    text: event.text.clone(),
                    start_time: seconds_to_ms(event.start),
                    end_time: seconds_to_ms(event.end),
                    r#final: event.is_final(),
                    language: event.language.clone().unwrap_or_default(),
                }],
            });
            let (identity, sid) = (self.local_identity.clone(), self.local_sid.clone());
            out.push(self.packet(&identity, &sid, destinations, value));
        }
        out
    }

    fn packet(
        &mut self,
        identity: &str,
        sid: &str,
        destinations: &[String],
        value: proto::data_packet::Value,
    ) -> proto::DataPacket {
        let sequence = self.next_sequence;
        self.next_sequence = self.next_sequence.wrapping_add(1).max(1);
        #[allow(deprecated)]
        proto::DataPacket {
            kind: proto::data_packet::Kind::Reliable as i32,
            participant_identity: identity.to_string(),
            destination_identities: destinations.to_vec(),
            sequence,
            participant_sid: sid.to_string(),
            value: Some(value),
        }
    }
}

/// The bytes sent on the `_reliable` data channel for one packet.
pub fn encode_packet(packet: &proto::DataPacket) -> Vec<u8> {
    packet.encode_to_vec()
}

fn seconds_to_ms(s: f64) -> u64 {
    if s.is_finite() && s > 0.0 {
        (s * 1000.0).round() as u64
    } else {
        0
    }
}

/// Splits `text` into pieces of at most `size` bytes, never inside a UTF-8 character
/// (`size` ≥ 4).
pub fn utf8_chunks(text: &str, size: usize) -> impl Iterator<Item = &str> {
    let size = size.max(4);
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = rest.len().min(size);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (head, tail) = rest.split_at(end);
        rest = tail;
        Some(head)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::captions::{EventKind, Word};
    use proto::data_packet::Value;

    fn event(kind: EventKind, seq: u64, revision: u32, text: &str) -> CaptionEvent {
        CaptionEvent {
            seq,
            kind,
            segment_id: "s0003".into(),
            revision,
            track: "alice-mic".into(),
            speaker: None,
            language: Some("fr".into()),
            text: text.into(),
            stable_text: String::new(),
            start: 12.345,
            end: 14.5,
            emitted_at: 15.0,
            words: vec![Word {
                w: "Ça".into(),
                start: 12.345,
                end: 12.6,
                speaker: None,
            }],
        }
    }

    const ALICE: Speaker<'static> = Speaker {
        identity: "alice",
        track_sid: "TR_AMabc",
    };

    /// Decodes the packets back from their wire bytes, checks the stream framing and returns
    /// (header, reassembled text, legacy transcription).
    fn decode(
        packets: &[proto::DataPacket],
        first_sequence: u32,
        destinations: &[String],
    ) -> (
        proto::data_stream::Header,
        String,
        Option<proto::Transcription>,
    ) {
        let mut header = None;
        let mut content = Vec::new();
        let mut trailer_seen = false;
        let mut legacy = None;
        for (i, p) in packets.iter().enumerate() {
            let p = proto::DataPacket::decode(encode_packet(p).as_slice()).unwrap();
            #[allow(deprecated)]
            let kind = p.kind;
            assert_eq!(kind, proto::data_packet::Kind::Reliable as i32);
            assert_eq!(p.sequence, first_sequence + i as u32);
            assert_eq!(p.destination_identities, destinations);
            match p.value.unwrap() {
                Value::StreamHeader(h) => {
                    assert_eq!(i, 0);
                    assert_eq!(p.participant_identity, "alice");
                    assert_eq!(p.participant_sid, "");
                    header = Some(h);
                }
                Value::StreamChunk(c) => {
                    let h = header.as_ref().unwrap();
                    assert!(!trailer_seen);
                    assert_eq!(c.stream_id, h.stream_id);
                    assert_eq!(c.chunk_index, (i - 1) as u64);
                    assert!(c.content.len() <= DEFAULT_CHUNK_SIZE);
                    // Every chunk is valid UTF-8 on its own.
                    assert!(std::str::from_utf8(&c.content).is_ok());
                    assert_eq!(p.participant_identity, "alice");
                    content.extend_from_slice(&c.content);
                }
                Value::StreamTrailer(t) => {
                    assert_eq!(t.stream_id, header.as_ref().unwrap().stream_id);
                    assert_eq!(t.reason, "");
                    assert!(t.attributes.is_empty());
                    trailer_seen = true;
                }
                Value::Transcription(t) => {
                    assert!(trailer_seen);
                    assert_eq!(i, packets.len() - 1);
                    assert_eq!(p.participant_identity, "soustitre-captions");
                    assert_eq!(p.participant_sid, "PA_self");
                    legacy = Some(t);
                }
                other => panic!("unexpected packet {other:?}"),
            }
        }
        assert!(trailer_seen);
        let header = header.unwrap();
        assert_eq!(header.total_length, Some(content.len() as u64));
        (header, String::from_utf8(content).unwrap(), legacy)
    }

    #[test]
    fn partial_then_final_of_a_segment() {
        let mut publisher = CaptionPublisher::new(
            "soustitre-captions",
            "PA_self",
            "c1",
            PublishSettings::default(),
        )
        .unwrap();
        let partial = event(EventKind::Partial, 7, 0, "Ça va très");
        let packets = publisher.packets(&partial, ALICE, &[], 1_700_000_000_123);
        assert_eq!(packets.len(), 4); // header, 1 chunk, trailer, legacy
        let (h, text, legacy) = decode(&packets, 1, &[]);
        assert_eq!(text, "Ça va très");
        assert_eq!(h.stream_id, "c1-TR_AMabc-7");
        assert_eq!(h.timestamp, 1_700_000_000_123);
        assert_eq!(h.topic, "lk.transcription");
        assert_eq!(h.mime_type, "text/plain");
        assert_eq!(h.inline_content, None);
        assert_eq!(h.compression, 0);
        assert_eq!(
            h.attributes,
            HashMap::from([
                ("lk.segment_id".to_string(), "TR_AMabc/s0003".to_string()),
                (
                    "lk.transcribed_track_id".to_string(),
                    "TR_AMabc".to_string()
                ),
                ("lk.transcription_final".to_string(), "false".to_string()),
            ])
        );
        assert_eq!(
            h.content_header,
            Some(proto::data_stream::header::ContentHeader::TextHeader(
                proto::data_stream::TextHeader {
                    operation_type: proto::data_stream::OperationType::Create as i32,
                    version: 0,
                    reply_to_stream_id: String::new(),
                    attached_stream_ids: vec![],
                    generated: true,
                }
            ))
        );
        assert_eq!(
            legacy.unwrap(),
            proto::Transcription {
                transcribed_participant_identity: "alice".into(),
                track_id: "TR_AMabc".into(),
                segments: vec![proto::TranscriptionSegment {
                    id: "TR_AMabc/s0003".into(),
                    text: "Ça va très".into(),
                    start_time: 12_345,
                    end_time: 14_500,
                    r#final: false,
                    language: "fr".into(),
                }],
            }
        );

        let final_ = event(EventKind::Final, 8, 1, "Ça va très bien, merci à vous");
        let to = vec!["bob".to_string(), "carol".to_string()];
        let packets = publisher.packets(&final_, ALICE, &to, 1_700_000_000_999);
        let (h, text, legacy) = decode(&packets, 5, &to);
        assert_eq!(text, "Ça va très bien, merci à vous");
        assert_eq!(h.stream_id, "c1-TR_AMabc-8");
        assert_eq!(h.attributes["lk.segment_id"], "TR_AMabc/s0003");
        assert_eq!(h.attributes["lk.transcription_final"], "true");
        assert_eq!(
            h.total_length,
            Some("Ça va très bien, merci à vous".len() as u64)
        );
        match h.content_header {
            Some(proto::data_stream::header::ContentHeader::TextHeader(t)) => {
                assert_eq!(t.version, 1)
            }
            other => panic!("{other:?}"),
        }
        let legacy = legacy.unwrap();
        assert!(legacy.segments[0].r#final);
        assert_eq!(legacy.segments[0].text, "Ça va très bien, merci à vous");
    }

    #[test]
    fn long_text_spans_chunks_split_on_character_boundaries() {
        // 3 bytes per "é€"-like unit mix, longer than two chunks.
        let unit = "Ça va très bien, merci à vous — ";
        let text: String = unit.repeat(1200);
        assert!(text.len() > 2 * DEFAULT_CHUNK_SIZE);
        let mut publisher = CaptionPublisher::new(
            "soustitre-captions",
            "PA_self",
            "c1",
            PublishSettings::default(),
        )
        .unwrap();
        let packets = publisher.packets(&event(EventKind::Final, 1, 0, &text), ALICE, &[], 0);
        let chunks = packets
            .iter()
            .filter(|p| matches!(p.value, Some(Value::StreamChunk(_))))
            .count();
        assert_eq!(chunks, text.len().div_ceil(DEFAULT_CHUNK_SIZE));
        let (_, back, _) = decode(&packets, 1, &[]);
        assert_eq!(back, text);

        // Tiny chunks force splits next to every multi-byte character.
        for size in [MIN_CHUNK_SIZE, 17, 18, 19] {
            let pieces: Vec<&str> = utf8_chunks(unit, size).collect();
            assert!(pieces.iter().all(|p| !p.is_empty() && p.len() <= size));
            assert_eq!(pieces.concat(), unit);
        }
        assert_eq!(utf8_chunks("", 16).count(), 0);
    }

    #[test]
    fn a_publisher_from_the_join_and_a_speaker_from_a_track() {
        let join = JoinInfo {
            room_name: "weekly-sync".into(),
            room_sid: "RM_weekly".into(),
            participant_sid: "PA_self".into(),
            identity: "soustitre-captions".into(),
            server_version: String::new(),
            ice_servers: vec![],
            subscriber_primary: true,
            ping_interval: std::time::Duration::from_secs(5),
            ping_timeout: std::time::Duration::from_secs(15),
            can_subscribe: true,
            can_publish_data: true,
            hidden: true,
        };
        let track = RemoteTrack {
            participant_sid: "PA_alice".into(),
            identity: "alice".into(),
            name: "Alice".into(),
            track_sid: "TR_AMabc".into(),
            track_name: String::new(),
            source: proto::TrackSource::Microphone,
            mime_type: "audio/opus".into(),
            mid: "0".into(),
            muted: false,
        };
        assert_eq!(Speaker::from(&track), ALICE);
        let mut publisher = CaptionPublisher::for_join(&join, PublishSettings::default()).unwrap();
        let ev = event(EventKind::Partial, 3, 0, "Ça va très");
        let packets = publisher.packets(&ev, (&track).into(), &[], 5);
        let (h, text, _) = decode(&packets, 1, &[]);
        assert_eq!(h.stream_id, "PA_self-TR_AMabc-3");
        assert_eq!(text, "Ça va très");
    }

    #[test]
    fn forms_can_be_chosen_and_settings_are_checked() {
        let mut only_legacy = CaptionPublisher::new(
            "soustitre-captions",
            "PA_self",
            "c1",
            PublishSettings {
                text_streams: false,
                ..Default::default()
            },
        )
        .unwrap();
        let packets = only_legacy.packets(&event(EventKind::Final, 1, 0, "Bonjour"), ALICE, &[], 0);
        assert_eq!(packets.len(), 1);
        assert!(matches!(packets[0].value, Some(Value::Transcription(_))));

        assert_eq!(
            CaptionPublisher::new(
                "x",
                "",
                "t",
                PublishSettings {
                    chunk_size: 8,
                    ..Default::default()
                }
            )
            .unwrap_err(),
            TranscriptionError::ChunkSize(8)
        );
        assert_eq!(
            CaptionPublisher::new("", "", "t", PublishSettings::default()).unwrap_err(),
            TranscriptionError::EmptyIdentity
        );
    }
}
