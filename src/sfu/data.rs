//! A send-only data-channel peer connection in a room's pipeline: the sidecar offers a
//! `webrtcbin` holding only data channels (no media), the SFU answers, and binary messages go
//! out on one of the channels. The LiveKit attachment publishes captions this way (its
//! *publisher* connection with `_reliable` and `_lossy`).
//!
//! # Threads
//! Offer/answer are blocking (promise waits, ICE gathering): call them from a blocking thread.
//! [`DataPeer::send`] only hands the bytes to the SCTP association (webrtcbin queues them) and
//! may be called from any thread. The channel's `open` is reported on a `watch` channel, set from
//! a GStreamer thread without blocking.
//!
//! # Latency model
//! One SCTP message per [`DataPeer::send`], sent as soon as the association's congestion window
//! allows; [`DataPeer::buffered`] tells how much is waiting, so the caller can apply its own
//! overflow policy instead of queueing without bound in webrtcbin.

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_sdp as gst_sdp;
use gstreamer_webrtc as gst_webrtc;
use tokio::sync::watch;

use super::media::{PeerError, RoomMedia, promise, promise_reply, watch_gathering};
use crate::media::MediaError;

/// One data channel to create (in-band, announced by DCEP, not pre-negotiated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSpec {
    pub label: String,
    /// Ordered delivery.
    pub ordered: bool,
    /// `Some(0)`: never retransmitted (lossy); `None`: reliable.
    pub max_retransmits: Option<u32>,
}

/// A data-only peer connection. Dropping it closes the channels and removes the webrtcbin.
pub struct DataPeer {
    pipeline: gst::Pipeline,
    webrtc: gst::Element,
    channels: Vec<gst_webrtc::WebRTCDataChannel>,
    label: String,
}

impl RoomMedia {
    /// Adds a webrtcbin with `channels`, makes its offer and waits for ICE gathering. Returns
    /// the peer, the offer SDP (with our candidates) and a receiver that turns `true` once the
    /// first channel is open. Blocking.
    pub fn data_peer(
        &self,
        label: &str,
        channels: &[ChannelSpec],
    ) -> Result<(DataPeer, String, watch::Receiver<bool>), PeerError> {
        self.data_peer_with(label, channels, &crate::sfu::media::IceServers::default())
    }

    /// [`RoomMedia::data_peer`] with ICE servers of this peer's own (e.g. the SFU's TURN).
    pub fn data_peer_with(
        &self,
        label: &str,
        channels: &[ChannelSpec],
        ice: &crate::sfu::media::IceServers,
    ) -> Result<(DataPeer, String, watch::Receiver<bool>), PeerError> {
        let id = self.next_peer_id();
        let webrtc = gst::ElementFactory::make("webrtcbin")
            .name(format!("data{id}"))
            .property_from_str("bundle-policy", "max-bundle")
            .build()
            .map_err(|_| {
                MediaError::MissingPlugin(
                    "webrtcbin (gstreamer1.0-plugins-bad, gstreamer1.0-nice)".into(),
                )
            })?;
        if let Some(stun) = ice.stun.as_ref().or(self.settings().stun_server.as_ref()) {
            webrtc.set_property("stun-server", stun);
        }
        for turn in &ice.turn {
            if !webrtc.emit_by_name::<bool>("add-turn-server", &[turn]) {
                tracing::warn!(peer = label, "webrtcbin refused a TURN server");
            }
        }
        let pipeline = self.pipeline().clone();
        pipeline
            .add(&webrtc)
            .map_err(|e| PeerError::Gst(format!("cannot add webrtcbin: {e}")))?;
        let mut peer = DataPeer {
            pipeline,
            webrtc: webrtc.clone(),
            channels: Vec::new(),
            label: format!("{}/{label}", self.pipeline().name()),
        };
        // From here on, dropping `peer` removes what was added.
        if !self.settings().ice_addresses.is_empty() {
            let agent = webrtc.property::<gst::glib::Object>("ice-agent");
            for address in &self.settings().ice_addresses {
                if !agent.emit_by_name::<bool>("add-local-ip-address", &[address]) {
                    return Err(PeerError::Negotiation(format!(
                        "ICE refused the local address {address}"
                    )));
                }
            }
        }
        let gathered = watch_gathering(&webrtc);
        webrtc
            .sync_state_with_parent()
            .map_err(|e| PeerError::Gst(format!("webrtcbin cannot start: {e}")))?;
        let (open_tx, open_rx) = watch::channel(false);
        for spec in channels {
            let mut options = gst::Structure::builder("config").field("ordered", spec.ordered);
            if let Some(n) = spec.max_retransmits {
                options = options.field("max-retransmits", n as i32);
            }
            let channel = webrtc
                .emit_by_name::<Option<gst_webrtc::WebRTCDataChannel>>(
                    "create-data-channel",
                    &[&spec.label, &options.build()],
                )
                .ok_or_else(|| {
                    PeerError::Negotiation(format!("cannot create data channel {}", spec.label))
                })?;
            let (tx, name) = (open_tx.clone(), peer.label.clone());
            channel.connect_on_open(move |c| {
                tracing::debug!(peer = %name, channel = ?c.label(), "data channel open");
                tx.send_replace(true);
            });
            let (tx, name) = (open_tx.clone(), peer.label.clone());
            channel.connect_on_close(move |c| {
                tracing::debug!(peer = %name, channel = ?c.label(), "data channel closed");
                tx.send_replace(false);
            });
            peer.channels.push(channel);
        }
        let reply = promise_reply(&webrtc, "create-offer")?;
        let offer = reply
            .and_then(|r| {
                r.value("offer")
                    .ok()
                    .and_then(|v| v.get::<gst_webrtc::WebRTCSessionDescription>().ok())
            })
            .ok_or_else(|| PeerError::Negotiation("create-offer returned no offer".into()))?;
        promise(&webrtc, "set-local-description", &offer)?;
        if !gathered.wait() {
            tracing::warn!(peer = %peer.label, "no ICE candidate gathered; offering without");
        }
        let local = webrtc
            .property::<Option<gst_webrtc::WebRTCSessionDescription>>("local-description")
            .ok_or_else(|| PeerError::Negotiation("no local description after offering".into()))?;
        let sdp = local
            .sdp()
            .as_text()
            .map_err(|e| PeerError::Sdp(format!("cannot print the offer: {e}")))?;
        Ok((peer, sdp, open_rx))
    }
}

impl DataPeer {
    /// Sets the SFU's answer. Blocking.
    pub fn set_answer(&self, sdp: &str) -> Result<(), PeerError> {
        let msg = gst_sdp::SDPMessage::parse_buffer(sdp.as_bytes())
            .map_err(|e| PeerError::Sdp(format!("cannot parse the answer: {e}")))?;
        let answer =
            gst_webrtc::WebRTCSessionDescription::new(gst_webrtc::WebRTCSDPType::Answer, msg);
        promise(&self.webrtc, "set-remote-description", &answer)
    }

    /// Adds a remote ICE candidate.
    pub fn add_candidate(&self, mline: u32, candidate: &str) {
        self.webrtc
            .emit_by_name::<()>("add-ice-candidate", &[&mline, &candidate]);
    }

    /// Sends one binary message on channel `index` (in the order of the specs).
    pub fn send(&self, index: usize, bytes: Vec<u8>) -> Result<(), PeerError> {
        let channel = self
            .channels
            .get(index)
            .ok_or_else(|| PeerError::Negotiation(format!("no data channel #{index}")))?;
        if channel.ready_state() != gst_webrtc::WebRTCDataChannelState::Open {
            return Err(PeerError::Negotiation(format!(
                "data channel {:?} is not open",
                channel.label()
            )));
        }
        channel
            .send_data_full(Some(&gst::glib::Bytes::from_owned(bytes)))
            .map_err(|e| PeerError::Negotiation(format!("send: {e}")))
    }

    /// Bytes queued on channel `index` and not yet handed to the network.
    pub fn buffered(&self, index: usize) -> u64 {
        self.channels
            .get(index)
            .map_or(0, gst_webrtc::WebRTCDataChannel::buffered_amount)
    }

    /// Label for logs.
    pub fn label(&self) -> &str {
        &self.label
    }
}

impl Drop for DataPeer {
    fn drop(&mut self) {
        for c in &self.channels {
            c.close();
        }
        let _ = self.webrtc.set_state(gst::State::Null);
        let _ = self.pipeline.remove(&self.webrtc);
    }
}
