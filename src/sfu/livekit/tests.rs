//! Recorded-exchange tests: server message sequences (protobuf JSON fixtures under
//! `tests/fixtures/livekit/`) replayed into a [`Session`], with the exact actions asserted.

use std::time::{Duration, Instant};

use livekit_protocol as proto;
use proto::signal_request::Message as Req;
use proto::signal_response::Message as Resp;

use super::session::{
    Action, IceServer, JoinInfo, MediaStreamId, RejoinReason, RemoteTrack, Session, SessionError,
    SessionSettings, SessionStats, parse_stream_id, sdp_msids,
};
use super::signal::{self, IceCandidateInit, Target};

const UNIX0: i64 = 1_700_000_000_000;

fn exchange() -> Vec<proto::SignalResponse> {
    let text = include_str!("../../../tests/fixtures/livekit/exchange.json");
    serde_json::from_str(text).expect("the fixture is protobuf JSON of SignalResponse messages")
}

fn track(
    psid: &str,
    identity: &str,
    name: &str,
    tsid: &str,
    track_name: &str,
    mime: &str,
    muted: bool,
) -> RemoteTrack {
    RemoteTrack {
        participant_sid: psid.into(),
        identity: identity.into(),
        name: name.into(),
        track_sid: tsid.into(),
        track_name: track_name.into(),
        source: proto::TrackSource::Microphone,
        mime_type: mime.into(),
        mid: "0".into(),
        muted,
    }
}

fn subscribe(tracks: &[(&str, &str)]) -> Action {
    Action::Send(Req::Subscription(proto::UpdateSubscription {
        track_sids: tracks.iter().map(|(_, t)| t.to_string()).collect(),
        subscribe: true,
        participant_tracks: tracks
            .iter()
            .map(|(p, t)| proto::ParticipantTracks {
                participant_sid: p.to_string(),
                track_sids: vec![t.to_string()],
            })
            .collect(),
    }))
}

fn alice_track() -> RemoteTrack {
    track(
        "PA_alice",
        "alice",
        "Alice Martin",
        "TR_AMalice",
        "microphone",
        "audio/opus",
        false,
    )
}

fn join_response() -> proto::JoinResponse {
    match exchange().remove(0).message {
        Some(Resp::Join(join)) => join,
        other => panic!("the fixture starts with a join, not {other:?}"),
    }
}

fn joined(session: &mut Session, t0: Instant) {
    let join = exchange().remove(0);
    session.handle_response(join, t0).unwrap();
}

#[test]
fn replays_a_realistic_exchange() {
    let msgs = exchange();
    assert_eq!(msgs.len(), 16);
    let t0 = Instant::now();
    let mut s = Session::new(SessionSettings::default(), t0, UNIX0);
    let mut msgs = msgs.into_iter();
    let mut next = |s: &mut Session, at: Instant| s.handle_response(msgs.next().unwrap(), at);

    // Join: two participants, one with audio + video, one with muted audio.
    assert_eq!(s.next_deadline(), None);
    let bob = track("PA_bob", "bob", "Bob", "TR_AMbob", "", "audio/red", true);
    assert_eq!(
        next(&mut s, t0).unwrap(),
        vec![
            Action::Joined(JoinInfo {
                room_name: "weekly-sync".into(),
                room_sid: "RM_weekly".into(),
                participant_sid: "PA_self".into(),
                identity: "soustitre-captions".into(),
                server_version: "1.8.4".into(),
                ice_servers: vec![
                    IceServer {
                        urls: vec!["stun:stun.example.org:3478".into()],
                        username: String::new(),
                        credential: String::new(),
                    },
                    IceServer {
                        urls: vec![
                            "turn:turn.example.org:3478?transport=udp".into(),
                            "turns:turn.example.org:443?transport=tcp".into(),
                        ],
                        username: "1700003600:PA_self".into(),
                        credential: "dGVzdA==".into(),
                    },
                ],
                subscriber_primary: true,
                ping_interval: Duration::from_secs(5),
                ping_timeout: Duration::from_secs(15),
                can_subscribe: true,
                can_publish_data: true,
                hidden: true,
            }),
            Action::ParticipantJoined {
                participant_sid: "PA_alice".into(),
                identity: "alice".into(),
                name: "Alice Martin".into(),
            },
            Action::TrackAdded(alice_track()),
            Action::ParticipantJoined {
                participant_sid: "PA_bob".into(),
                identity: "bob".into(),
                name: "Bob".into(),
            },
            Action::TrackAdded(bob.clone()),
            subscribe(&[("PA_alice", "TR_AMalice"), ("PA_bob", "TR_AMbob")]),
            Action::NegotiatePublisher,
        ]
    );
    assert_eq!(s.next_deadline(), Some(t0 + Duration::from_secs(5)));
    assert_eq!(s.identities().collect::<Vec<_>>(), ["alice", "bob"]);

    // Subscriber offer → answer echoing the offer id.
    let offer = next(&mut s, t0).unwrap();
    let [Action::RemoteOffer { sdp }] = offer.as_slice() else {
        panic!("{offer:?}")
    };
    assert!(sdp.contains("a=msid:PA_alice|TR_AMalice TR_AMalice"));
    assert_eq!(
        s.track_for_msid("PA_alice|TR_AMalice", "TR_AMalice"),
        Some(&alice_track())
    );
    assert_eq!(s.track_for_msid("PA_bob|TR_AMalice", "TR_AMalice"), None);
    // webrtcbin gives the transceiver's mid: the offer's msid maps it.
    assert_eq!(s.track_for_mid("0"), Some(&alice_track()));
    assert_eq!(s.track_for_mid("1"), None);
    assert_eq!(alice_track().stream_id(), "PA_alice|TR_AMalice");
    assert_eq!(
        s.local_answer("v=0 answer".into()).unwrap(),
        vec![Action::Send(Req::Answer(proto::SessionDescription {
            r#type: "answer".into(),
            sdp: "v=0 answer".into(),
            id: 1,
            mid_to_track_id: Default::default(),
        }))]
    );
    assert!(matches!(
        s.local_answer("again".into()),
        Err(SessionError::NoPendingOffer)
    ));

    // Remote then local candidates for the subscriber connection.
    let server_candidate = IceCandidateInit {
        candidate: "candidate:3391 1 udp 2130706431 203.0.113.7 7882 typ host".into(),
        sdp_mid: Some("0".into()),
        sdp_m_line_index: Some(0),
    };
    assert_eq!(
        next(&mut s, t0).unwrap(),
        vec![Action::RemoteCandidate {
            target: Target::Subscriber,
            candidate: server_candidate.clone(),
        }]
    );
    let local = IceCandidateInit {
        candidate: "candidate:1 1 UDP 2122252543 10.0.0.2 50000 typ host".into(),
        sdp_mid: Some("0".into()),
        sdp_m_line_index: Some(0),
    };
    assert_eq!(
        s.local_candidate(Target::Subscriber, Some(local)).unwrap(),
        vec![Action::Send(Req::Trickle(proto::TrickleRequest {
            candidate_init: r#"{"candidate":"candidate:1 1 UDP 2122252543 10.0.0.2 50000 typ host","sdpMid":"0","sdpMLineIndex":0}"#.into(),
            target: proto::SignalTarget::Subscriber as i32,
            r#final: false,
        }))]
    );
    assert_eq!(
        s.local_candidate(Target::Subscriber, None).unwrap(),
        vec![Action::Send(Req::Trickle(proto::TrickleRequest {
            candidate_init: String::new(),
            target: proto::SignalTarget::Subscriber as i32,
            r#final: true,
        }))]
    );

    // Publisher connection for the data channels.
    assert_eq!(
        s.publisher_offer("v=0 offer".into()).unwrap(),
        vec![Action::Send(Req::Offer(proto::SessionDescription {
            r#type: "offer".into(),
            sdp: "v=0 offer".into(),
            id: 0,
            mid_to_track_id: Default::default(),
        }))]
    );
    let answer = next(&mut s, t0).unwrap();
    assert!(
        matches!(answer.as_slice(), [Action::PublisherAnswer { sdp }] if sdp.contains("webrtc-datachannel"))
    );
    assert_eq!(
        next(&mut s, t0).unwrap(),
        vec![Action::RemoteCandidate {
            target: Target::Publisher,
            candidate: server_candidate,
        }]
    );
    assert_eq!(
        next(&mut s, t0).unwrap(),
        vec![Action::TrackSubscribed {
            track_sid: "TR_AMalice".into()
        }]
    );
    // Speaker updates are of no use: ignored, counted.
    assert_eq!(next(&mut s, t0).unwrap(), vec![]);

    // Carol joins, then publishes audio.
    assert_eq!(
        next(&mut s, t0).unwrap(),
        vec![Action::ParticipantJoined {
            participant_sid: "PA_carol".into(),
            identity: "carol".into(),
            name: "Carol Dupont".into(),
        }]
    );
    let carol = track(
        "PA_carol",
        "carol",
        "Carol Dupont",
        "TR_AMcarol",
        "",
        "audio/opus",
        false,
    );
    assert_eq!(
        next(&mut s, t0).unwrap(),
        vec![
            Action::TrackAdded(carol.clone()),
            subscribe(&[("PA_carol", "TR_AMcarol")]),
        ]
    );
    assert_eq!(s.track("TR_AMcarol"), Some(&carol));

    // Bob unmutes.
    assert_eq!(
        next(&mut s, t0).unwrap(),
        vec![Action::TrackMuted {
            participant_sid: "PA_bob".into(),
            track_sid: "TR_AMbob".into(),
            muted: false,
        }]
    );
    assert!(!s.track("TR_AMbob").unwrap().muted);

    // Carol unpublishes.
    assert_eq!(
        next(&mut s, t0).unwrap(),
        vec![Action::TrackRemoved {
            participant_sid: "PA_carol".into(),
            track_sid: "TR_AMcarol".into(),
        }]
    );
    assert_eq!(s.track("TR_AMcarol"), None);

    // A stale update (older version) of Alice changes nothing.
    assert_eq!(next(&mut s, t0).unwrap(), vec![]);
    assert_eq!(s.track("TR_AMalice"), Some(&alice_track()));

    // Carol leaves.
    assert_eq!(
        next(&mut s, t0).unwrap(),
        vec![Action::ParticipantLeft {
            participant_sid: "PA_carol".into(),
            identity: "carol".into(),
        }]
    );
    assert_eq!(s.identities().collect::<Vec<_>>(), ["alice", "bob"]);

    // Token refresh.
    let token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJzb3VzdGl0cmUtY2FwdGlvbnMifQ.c2lnbmF0dXJl";
    assert_eq!(
        next(&mut s, t0).unwrap(),
        vec![Action::TokenRefreshed {
            token: token.into()
        }]
    );
    assert_eq!(s.refreshed_token(), Some(token));

    // Keepalive: a ping at the interval, the pong gives the round trip.
    assert_eq!(s.tick(t0 + Duration::from_millis(4999)), vec![]);
    assert_eq!(
        s.tick(t0 + Duration::from_secs(5)),
        vec![Action::Send(Req::PingReq(proto::Ping {
            timestamp: UNIX0 + 5000,
            rtt: 0,
        }))]
    );
    assert_eq!(
        next(&mut s, t0 + Duration::from_millis(5040)).unwrap(),
        vec![]
    );
    assert_eq!(s.stats().rtt_ms, 40);
    assert_eq!(
        s.tick(t0 + Duration::from_secs(10)),
        vec![Action::Send(Req::PingReq(proto::Ping {
            timestamp: UNIX0 + 10_000,
            rtt: 40,
        }))]
    );

    // The server leaves and allows reconnecting.
    assert_eq!(
        next(&mut s, t0 + Duration::from_secs(11)).unwrap(),
        vec![Action::Rejoin {
            reason: RejoinReason::Server(proto::DisconnectReason::ServerShutdown)
        }]
    );
    assert!(s.is_closed());
    assert_eq!(s.next_deadline(), None);
    assert!(matches!(
        s.handle_frame(&signal::encode_response(Resp::RefreshToken("x".into())), t0),
        Err(SessionError::Closed)
    ));
    assert_eq!(
        s.stats(),
        SessionStats {
            received: 17,
            unknown: 0,
            ignored: 1,
            refused: 1,
            stale: 1,
            rtt_ms: 40,
        }
    );
}

#[test]
fn malformed_and_unknown_messages_are_refused_or_counted_never_panic() {
    let t0 = Instant::now();
    let mut s = Session::new(SessionSettings::default(), t0, UNIX0);

    // Before the join.
    let offer = signal::encode_response(Resp::Offer(proto::SessionDescription {
        r#type: "offer".into(),
        sdp: "v=0".into(),
        ..Default::default()
    }));
    let err = s.handle_frame(&offer, t0).unwrap_err();
    assert_eq!(err.to_string(), "`offer` received before the join response");
    let err = s
        .handle_response(
            proto::SignalResponse {
                message: Some(Resp::Join(proto::JoinResponse::default())),
            },
            t0,
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "`join` message is malformed: no local participant"
    );
    assert!(matches!(
        s.publisher_offer("v=0".into()),
        Err(SessionError::NotJoined(_))
    ));

    // Undecodable bytes.
    assert!(matches!(
        s.handle_frame(&[0x0a, 0xff, 0x01], t0),
        Err(SessionError::Frame(_))
    ));
    // An empty message and a message of a type this protocol version does not know
    // (field 199, varint) decode to no content: ignored, counted.
    assert_eq!(s.handle_frame(&[], t0).unwrap(), vec![]);
    assert_eq!(s.handle_frame(&[0xb8, 0x0c, 0x01], t0).unwrap(), vec![]);

    joined(&mut s, t0);
    let bad = |m: Resp| proto::SignalResponse { message: Some(m) };
    let cases: Vec<(Resp, &str)> = vec![
        (
            Resp::Join(join_response()),
            "a second join response was received",
        ),
        (
            Resp::Trickle(proto::TrickleRequest {
                candidate_init: "not json".into(),
                target: 1,
                r#final: false,
            }),
            "`trickle` message is malformed: candidate_init is not a candidate JSON: expected ident at line 1 column 2",
        ),
        (
            Resp::Trickle(proto::TrickleRequest {
                candidate_init: "{}".into(),
                target: 7,
                r#final: false,
            }),
            "`trickle` message is malformed: unknown target 7",
        ),
        (
            Resp::Answer(proto::SessionDescription {
                r#type: "answer".into(),
                ..Default::default()
            }),
            "publisher answer received without a publisher offer",
        ),
        (
            Resp::Offer(proto::SessionDescription {
                r#type: "pranswer".into(),
                ..Default::default()
            }),
            "`offer` message is malformed: type \"pranswer\", expected \"offer\"",
        ),
        (
            Resp::RefreshToken(String::new()),
            "`refresh_token` message is malformed: empty token",
        ),
    ];
    for (m, want) in cases {
        assert_eq!(s.handle_response(bad(m), t0).unwrap_err().to_string(), want);
    }
    // Still usable after refusals.
    assert!(s.track("TR_AMalice").is_some());
    assert_eq!(
        s.stats(),
        SessionStats {
            received: 12,
            unknown: 2,
            ignored: 0,
            refused: 9,
            stale: 0,
            rtt_ms: 0,
        }
    );

    // Random frames: refused or ignored, never a panic.
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..5000 {
        let len = rng.random_range(0..64);
        let frame: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        let _ = s.handle_frame(&frame, t0);
    }
    assert_eq!(s.stats().received, 5012);
}

#[test]
fn ping_timeout_asks_for_a_rejoin_once() {
    let t0 = Instant::now();
    let mut s = Session::new(SessionSettings::default(), t0, UNIX0);
    joined(&mut s, t0);
    // Any message resets the silence timer.
    s.handle_response(
        proto::SignalResponse {
            message: Some(Resp::PongResp(proto::Pong::default())),
        },
        t0 + Duration::from_secs(6),
    )
    .unwrap();
    assert_eq!(
        s.next_deadline(),
        Some(t0 + Duration::from_secs(5)),
        "ping due before the timeout"
    );
    let pings = s.tick(t0 + Duration::from_secs(20));
    assert!(matches!(pings.as_slice(), [Action::Send(Req::PingReq(_))]));
    // Missed beats are skipped: the next ping is in the future.
    assert_eq!(s.next_deadline(), Some(t0 + Duration::from_secs(21)));
    assert_eq!(
        s.tick(t0 + Duration::from_secs(21)),
        vec![Action::Rejoin {
            reason: RejoinReason::PingTimeout
        }]
    );
    assert_eq!(s.tick(t0 + Duration::from_secs(40)), vec![]);
    assert!(s.is_closed());
}

#[test]
fn leave_without_reconnect_disconnects_and_old_servers_use_can_reconnect() {
    let t0 = Instant::now();
    for (leave, want) in [
        (
            proto::LeaveRequest {
                can_reconnect: false,
                reason: proto::DisconnectReason::RoomDeleted as i32,
                action: proto::leave_request::Action::Disconnect as i32,
                regions: None,
            },
            Action::Disconnected {
                reason: proto::DisconnectReason::RoomDeleted,
            },
        ),
        (
            proto::LeaveRequest {
                can_reconnect: true,
                reason: proto::DisconnectReason::Migration as i32,
                action: proto::leave_request::Action::Disconnect as i32,
                regions: None,
            },
            Action::Rejoin {
                reason: RejoinReason::Server(proto::DisconnectReason::Migration),
            },
        ),
        (
            proto::LeaveRequest {
                can_reconnect: false,
                reason: proto::DisconnectReason::SignalClose as i32,
                action: proto::leave_request::Action::Reconnect as i32,
                regions: None,
            },
            Action::Rejoin {
                reason: RejoinReason::Server(proto::DisconnectReason::SignalClose),
            },
        ),
    ] {
        let mut s = Session::new(SessionSettings::default(), t0, UNIX0);
        joined(&mut s, t0);
        let got = s
            .handle_response(
                proto::SignalResponse {
                    message: Some(Resp::Leave(leave)),
                },
                t0,
            )
            .unwrap();
        assert_eq!(got, vec![want]);
    }

    let mut s = Session::new(SessionSettings::default(), t0, UNIX0);
    joined(&mut s, t0);
    assert_eq!(
        s.leave(),
        vec![
            Action::Send(Req::Leave(proto::LeaveRequest {
                can_reconnect: false,
                reason: proto::DisconnectReason::ClientInitiated as i32,
                action: proto::leave_request::Action::Disconnect as i32,
                regions: None,
            })),
            Action::Disconnected {
                reason: proto::DisconnectReason::ClientInitiated
            },
        ]
    );
    assert_eq!(s.leave(), vec![]);
}

#[test]
fn a_participant_rejoining_with_a_new_sid_replaces_the_old_one() {
    let t0 = Instant::now();
    let mut s = Session::new(
        SessionSettings {
            publish_captions: false,
        },
        t0,
        UNIX0,
    );
    let join = s.handle_response(exchange().remove(0), t0).unwrap();
    assert!(!join.contains(&Action::NegotiatePublisher));
    let update = proto::ParticipantUpdate {
        participants: vec![
            proto::ParticipantInfo {
                sid: "PA_alice2".into(),
                identity: "alice".into(),
                name: "Alice M.".into(),
                version: 1,
                tracks: vec![proto::TrackInfo {
                    sid: "TR_AMalice2".into(),
                    r#type: proto::TrackType::Audio as i32,
                    source: proto::TrackSource::Microphone as i32,
                    mime_type: "audio/opus".into(),
                    mid: "0".into(),
                    ..Default::default()
                }],
                ..Default::default()
            },
            // The sidecar's own info is not a remote participant.
            proto::ParticipantInfo {
                sid: "PA_self".into(),
                identity: "soustitre-captions".into(),
                ..Default::default()
            },
        ],
    };
    assert_eq!(
        s.handle_response(
            proto::SignalResponse {
                message: Some(Resp::Update(update)),
            },
            t0,
        )
        .unwrap(),
        vec![
            Action::TrackRemoved {
                participant_sid: "PA_alice".into(),
                track_sid: "TR_AMalice".into(),
            },
            Action::ParticipantLeft {
                participant_sid: "PA_alice".into(),
                identity: "alice".into(),
            },
            Action::ParticipantJoined {
                participant_sid: "PA_alice2".into(),
                identity: "alice".into(),
                name: "Alice M.".into(),
            },
            Action::TrackAdded(track(
                "PA_alice2",
                "alice",
                "Alice M.",
                "TR_AMalice2",
                "",
                "audio/opus",
                false
            )),
            subscribe(&[("PA_alice2", "TR_AMalice2")]),
        ]
    );
    assert_eq!(s.identities().collect::<Vec<_>>(), ["bob", "alice"]);
}

#[test]
fn without_data_permission_no_publisher_is_asked_for() {
    let t0 = Instant::now();
    let mut join = join_response();
    join.participant.as_mut().unwrap().permission = Some(proto::ParticipantPermission {
        can_subscribe: true,
        can_publish_data: false,
        ..Default::default()
    });
    let mut s = Session::new(SessionSettings::default(), t0, UNIX0);
    let actions = s
        .handle_response(
            proto::SignalResponse {
                message: Some(Resp::Join(join)),
            },
            t0,
        )
        .unwrap();
    assert!(!actions.contains(&Action::NegotiatePublisher));
    let info = s.join_info().unwrap();
    assert!(info.can_subscribe && !info.can_publish_data && !info.hidden);
    // A join without permissions (older servers) assumes the token's grant.
    let mut join = join_response();
    join.participant.as_mut().unwrap().permission = None;
    let mut s = Session::new(SessionSettings::default(), t0, UNIX0);
    let actions = s
        .handle_response(
            proto::SignalResponse {
                message: Some(Resp::Join(join)),
            },
            t0,
        )
        .unwrap();
    assert_eq!(actions.last(), Some(&Action::NegotiatePublisher));
}

#[test]
fn a_rename_reaches_the_track_labels() {
    let t0 = Instant::now();
    let mut s = Session::new(SessionSettings::default(), t0, UNIX0);
    joined(&mut s, t0);
    let mut bob = match exchange().remove(0).message {
        Some(Resp::Join(j)) => j.other_participants[1].clone(),
        other => panic!("{other:?}"),
    };
    bob.version = 3;
    bob.name = "Bob Durand".into();
    let got = s
        .handle_response(
            proto::SignalResponse {
                message: Some(Resp::Update(proto::ParticipantUpdate {
                    participants: vec![bob],
                })),
            },
            t0,
        )
        .unwrap();
    assert_eq!(
        got,
        vec![Action::ParticipantRenamed {
            participant_sid: "PA_bob".into(),
            name: "Bob Durand".into(),
        }]
    );
    assert_eq!(s.track("TR_AMbob").unwrap().name, "Bob Durand");
}

#[test]
fn msids_are_read_per_m_section() {
    let sdp = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=msid-semantic: WMS *\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=msid:PA_a|TR_A1 TR_A1\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\na=ssrc:1234 cname:x\r\na=ssrc:1234 msid:PA_b|TR_B1 TR_B1\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:2\r\na=inactive\r\n\
        m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:3\r\n";
    assert_eq!(
        sdp_msids(sdp),
        vec![
            MediaStreamId {
                mid: "0".into(),
                kind: "audio".into(),
                stream_id: "PA_a|TR_A1".into(),
                track_id: "TR_A1".into(),
            },
            MediaStreamId {
                mid: "1".into(),
                kind: "audio".into(),
                stream_id: "PA_b|TR_B1".into(),
                track_id: "TR_B1".into(),
            },
        ]
    );
    assert_eq!(sdp_msids(""), vec![]);
    assert_eq!(sdp_msids("a=msid:x y\nm=audio\n"), vec![]);
}

#[test]
fn stream_ids_split_as_livekit_sets_them() {
    assert_eq!(parse_stream_id("PA_a|TR_b", "TR_b"), Some(("PA_a", "TR_b")));
    // A stream id whose second part is not a track sid falls back to the msid track id.
    assert_eq!(
        parse_stream_id("PA_a|camera", "TR_c"),
        Some(("PA_a", "TR_c"))
    );
    assert_eq!(parse_stream_id("PA_a|camera", "audio0"), None);
    assert_eq!(parse_stream_id("PA_a", "TR_b"), None);
    assert_eq!(parse_stream_id("|TR_b", "TR_b"), None);
    assert_eq!(parse_stream_id("PA_a|TR_b|x", "TR_b"), None);
}

mod transport {
    use super::*;
    use crate::sfu::livekit::transport::{Command, DriveEnd, drive};
    use futures_util::{SinkExt, StreamExt};
    use tokio::sync::mpsc;
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::Role;

    async fn recv_request(
        server: &mut WebSocketStream<tokio::io::DuplexStream>,
    ) -> proto::signal_request::Message {
        loop {
            match server.next().await.unwrap().unwrap() {
                Message::Binary(b) => return signal::decode_request(&b).unwrap().message.unwrap(),
                Message::Close(_) => panic!("closed"),
                _ => continue,
            }
        }
    }

    /// Real WebSocket framing over an in-memory pipe; tokio's paused clock makes the ping and
    /// the timeout happen without waiting.
    #[tokio::test(start_paused = true)]
    async fn drives_a_session_over_a_websocket() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let client = WebSocketStream::from_raw_socket(a, Role::Client, None).await;
        let mut server = WebSocketStream::from_raw_socket(b, Role::Server, None).await;
        let (cmd_tx, mut cmd_rx) = mpsc::channel(8);
        let (ev_tx, mut ev_rx) = mpsc::channel(64);
        let started = tokio::time::Instant::now();
        let driver = tokio::spawn(async move {
            let mut session = Session::new(
                SessionSettings::default(),
                tokio::time::Instant::now().into_std(),
                UNIX0,
            );
            let end = drive(client, &mut session, &mut cmd_rx, &ev_tx).await;
            (end.unwrap(), session.stats())
        });

        let mut msgs = exchange().into_iter();
        let frame =
            |m: proto::SignalResponse| Message::Binary(prost::Message::encode_to_vec(&m).into());
        server.send(frame(msgs.next().unwrap())).await.unwrap();
        assert!(matches!(ev_rx.recv().await, Some(Action::Joined(_))));
        // The subscription goes out on the socket, the other actions to the media side.
        match recv_request(&mut server).await {
            Req::Subscription(sub) => assert_eq!(sub.track_sids, ["TR_AMalice", "TR_AMbob"]),
            other => panic!("{other:?}"),
        }
        let mut media = Vec::new();
        while media.last() != Some(&Action::NegotiatePublisher) {
            media.push(ev_rx.recv().await.unwrap());
        }
        assert_eq!(media.len(), 5);

        // Offer → the media side answers through a command.
        server.send(frame(msgs.next().unwrap())).await.unwrap();
        assert!(matches!(
            ev_rx.recv().await,
            Some(Action::RemoteOffer { .. })
        ));
        cmd_tx
            .send(Command::LocalAnswer("v=0 answer".into()))
            .await
            .unwrap();
        match recv_request(&mut server).await {
            Req::Answer(a) => assert_eq!((a.sdp.as_str(), a.id), ("v=0 answer", 1)),
            other => panic!("{other:?}"),
        }
        // A refused command is logged, not fatal.
        cmd_tx
            .send(Command::LocalAnswer("no offer pending".into()))
            .await
            .unwrap();

        // Keepalive at the server's interval (5 s), measured on the paused clock.
        match recv_request(&mut server).await {
            Req::PingReq(p) => {
                assert_eq!(p.timestamp, UNIX0 + 5000);
                assert_eq!(started.elapsed(), Duration::from_secs(5));
            }
            other => panic!("{other:?}"),
        }
        // Silence from the server: the session asks for a rejoin after the 15 s timeout.
        match recv_request(&mut server).await {
            Req::PingReq(p) => assert_eq!(p.timestamp, UNIX0 + 10_000),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            ev_rx.recv().await,
            Some(Action::Rejoin {
                reason: RejoinReason::PingTimeout
            })
        );
        let (end, stats) = driver.await.unwrap();
        assert_eq!(end, DriveEnd::Rejoin(RejoinReason::PingTimeout));
        assert_eq!(started.elapsed(), Duration::from_secs(15));
        assert_eq!(stats.received, 2);
    }

    #[tokio::test]
    async fn leave_command_sends_leave_and_ends() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let client = WebSocketStream::from_raw_socket(a, Role::Client, None).await;
        let mut server = WebSocketStream::from_raw_socket(b, Role::Server, None).await;
        let (cmd_tx, mut cmd_rx) = mpsc::channel(8);
        let (ev_tx, mut ev_rx) = mpsc::channel(64);
        let driver = tokio::spawn(async move {
            let mut session = Session::new(SessionSettings::default(), Instant::now(), UNIX0);
            drive(client, &mut session, &mut cmd_rx, &ev_tx)
                .await
                .unwrap()
        });
        cmd_tx.send(Command::Leave).await.unwrap();
        match recv_request(&mut server).await {
            Req::Leave(l) => assert_eq!(l.reason(), proto::DisconnectReason::ClientInitiated),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            ev_rx.recv().await,
            Some(Action::Disconnected {
                reason: proto::DisconnectReason::ClientInitiated
            })
        );
        assert_eq!(driver.await.unwrap(), DriveEnd::Left);
    }

    /// One real TCP socket on loopback: the URL and token as a server receives them, then a
    /// short exchange ending with the server's `leave`.
    #[tokio::test]
    async fn connects_over_tcp_with_the_token_in_the_url() {
        use crate::sfu::livekit::signal::{UrlOptions, signal_url};
        use crate::sfu::livekit::token::{TokenMinter, TokenSettings};
        use crate::sfu::livekit::transport::connect;
        use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

        const SECRET: &str = "loopback-test-secret-0123456789abcdef";
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let token = TokenMinter::new("APIkey", SECRET, "weekly-sync", TokenSettings::default())
            .unwrap()
            .mint()
            .unwrap();
        let url = signal_url(
            &format!("http://{addr}"),
            &token.jwt,
            &UrlOptions {
                auto_subscribe: false,
                version: "9.9.9".into(),
            },
        )
        .unwrap();

        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut seen = None;
            // The callback's signature is tungstenite's.
            #[allow(clippy::result_large_err)]
            let mut ws =
                tokio_tungstenite::accept_hdr_async(tcp, |req: &Request, resp: Response| {
                    seen = Some(req.uri().clone());
                    Ok(resp)
                })
                .await
                .unwrap();
            let uri = seen.unwrap();
            assert_eq!(uri.path(), "/rtc");
            let query: std::collections::HashMap<String, String> = uri
                .query()
                .unwrap()
                .split('&')
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap();
                    (k.to_string(), v.to_string())
                })
                .collect();
            assert_eq!(query["auto_subscribe"], "0");
            assert_eq!(query["sdk"], "rust");
            assert_eq!(query["protocol"], "18");
            assert_eq!(query["version"], "9.9.9");
            let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
            validation.set_issuer(&["APIkey"]);
            let claims = jsonwebtoken::decode::<serde_json::Value>(
                &query["access_token"],
                &jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes()),
                &validation,
            )
            .unwrap()
            .claims;
            assert_eq!(claims["video"]["room"], "weekly-sync");
            assert_eq!(claims["sub"], "soustitre-captions");

            let frame = |m: proto::SignalResponse| {
                Message::Binary(prost::Message::encode_to_vec(&m).into())
            };
            ws.send(frame(exchange().remove(0))).await.unwrap();
            match recv_request_tcp(&mut ws).await {
                Req::Subscription(sub) => assert!(sub.subscribe),
                other => panic!("{other:?}"),
            }
            ws.send(Message::Binary(
                signal::encode_response(Resp::Leave(proto::LeaveRequest {
                    reason: proto::DisconnectReason::RoomDeleted as i32,
                    ..Default::default()
                }))
                .into(),
            ))
            .await
            .unwrap();
            // The client closes after the leave.
            while let Some(Ok(m)) = ws.next().await {
                if m.is_close() {
                    break;
                }
            }
        });

        let socket = connect(&url).await.unwrap();
        let (_cmd_tx, mut cmd_rx) = mpsc::channel(8);
        let (ev_tx, mut ev_rx) = mpsc::channel(64);
        let mut session = Session::new(SessionSettings::default(), Instant::now(), UNIX0);
        let end = drive(socket, &mut session, &mut cmd_rx, &ev_tx)
            .await
            .unwrap();
        assert_eq!(
            end,
            DriveEnd::Disconnected(proto::DisconnectReason::RoomDeleted)
        );
        server.await.unwrap();
        drop(ev_tx);
        let mut kinds = Vec::new();
        while let Some(a) = ev_rx.recv().await {
            kinds.push(match a {
                Action::Joined(_) => "joined",
                Action::ParticipantJoined { .. } => "participant",
                Action::TrackAdded(_) => "track",
                Action::NegotiatePublisher => "publisher",
                Action::Disconnected { .. } => "disconnected",
                other => panic!("{other:?}"),
            });
        }
        assert_eq!(
            kinds,
            [
                "joined",
                "participant",
                "track",
                "participant",
                "track",
                "publisher",
                "disconnected"
            ]
        );

        // A refused upgrade is a connect error carrying the status.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let refuser = tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut buf = [0u8; 4096];
            let _ = tcp.read(&mut buf).await.unwrap();
            tcp.write_all(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
        });
        let url = signal_url(&format!("ws://{addr}"), "bad", &UrlOptions::default()).unwrap();
        let err = connect(&url).await.unwrap_err();
        assert!(err.to_string().contains("401"), "{err}");
        refuser.await.unwrap();
    }

    /// `wss://` builds its TLS client (rustls, ring, webpki roots) without a process-wide
    /// provider being installed: a server that is not TLS is a connect error, not a panic.
    #[tokio::test]
    async fn wss_fails_cleanly_against_a_non_tls_server() {
        use crate::sfu::livekit::signal::{UrlOptions, signal_url};
        use crate::sfu::livekit::transport::{TransportError, connect};
        use tokio::io::AsyncWriteExt;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            tcp.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                .await
                .unwrap();
        });
        let url = signal_url(&format!("wss://{addr}"), "t", &UrlOptions::default()).unwrap();
        let err = connect(&url).await.unwrap_err();
        assert!(matches!(err, TransportError::Connect(_)), "{err}");
        // rustls read the plain HTTP reply as a TLS record: the handshake did run.
        assert!(err.to_string().contains("InvalidContentType"), "{err}");
        server.await.unwrap();
    }

    async fn recv_request_tcp(
        ws: &mut WebSocketStream<tokio::net::TcpStream>,
    ) -> proto::signal_request::Message {
        loop {
            match ws.next().await.unwrap().unwrap() {
                Message::Binary(b) => return signal::decode_request(&b).unwrap().message.unwrap(),
                Message::Close(_) => panic!("closed"),
                _ => continue,
            }
        }
    }
}
