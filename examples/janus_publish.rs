//! Publishes recordings into a Janus VideoRoom as live participants, one webrtcbin publisher per
//! file, all on one meeting clock: a way to try soustitre's Janus attachment (or any Janus room)
//! with known audio.
//!
//! ```text
//! cargo run --release --example janus_publish -- ws://127.0.0.1:8188/ 1234 \
//!     Alice=../shared/corpus/dev/meetings/en_3spk/tracks/A.wav \
//!     Bob=../shared/corpus/dev/meetings/en_3spk/tracks/B.wav
//! ```
//!
//! Options (before the positional arguments): `--lead SECONDS` (time given to connect before the
//! recordings start, default 5), `--ice ADDRESS` (restrict ICE to that local address, repeatable),
//! `--first-id N` (feed id of the first participant, default 1). Each participant gets feed id
//! `first-id + index` and its name as display. Exits when every recording was sent.

use std::time::{Duration, Instant};

use soustitre::sfu::janus::publish::{FilePublisher, PublishSettings, PublishState};
use soustitre::sfu::media::MediaSettings;

fn usage() -> ! {
    eprintln!(
        "usage: janus_publish [--lead S] [--ice ADDR]... [--first-id N] JANUS_WS_URL ROOM NAME=FILE..."
    );
    std::process::exit(2)
}

fn main() {
    let mut lead = 5.0f64;
    let mut ice = Vec::new();
    let mut first_id = 1u64;
    let mut positional = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--lead" => {
                lead = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            "--ice" => ice.push(args.next().unwrap_or_else(|| usage())),
            "--first-id" => {
                first_id = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            "-h" | "--help" => usage(),
            _ => positional.push(a),
        }
    }
    if positional.len() < 3 || !(0.0..=600.0).contains(&lead) {
        usage();
    }
    let url = positional[0].clone();
    let room: u64 = positional[1].parse().unwrap_or_else(|_| usage());
    let people: Vec<(String, String)> = positional[2..]
        .iter()
        .map(|p| match p.split_once('=') {
            Some((n, f)) if !n.is_empty() && !f.is_empty() => (n.to_owned(), f.to_owned()),
            _ => usage(),
        })
        .collect();
    if let Err(e) = gstreamer::init() {
        eprintln!("error: GStreamer: {e}");
        std::process::exit(1);
    }
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let code = rt.block_on(async move {
        let origin = Instant::now() + Duration::from_secs_f64(lead);
        let mut publishers = Vec::new();
        for (i, (name, file)) in people.iter().enumerate() {
            let settings = PublishSettings {
                url: url.clone(),
                room,
                id: first_id + i as u64,
                display: name.clone(),
                media: MediaSettings {
                    ice_addresses: ice.clone(),
                    ..MediaSettings::default()
                },
            };
            match FilePublisher::start(settings, file, origin).await {
                Ok(p) => publishers.push((name.clone(), p)),
                Err(e) => {
                    eprintln!("error: {name} ({file}): {e}");
                    return 1;
                }
            }
        }
        let mut code = 0;
        for (name, p) in &mut publishers {
            // a recording lasts as long as it lasts: wait without a deadline, reporting progress
            loop {
                match p
                    .wait_for(
                        |s| matches!(s, PublishState::Finished | PublishState::Stopped),
                        Duration::from_secs(10),
                    )
                    .await
                {
                    Some(PublishState::Finished) => {
                        eprintln!("{name}: sent {:.1} s", p.sent_samples() as f64 / 16_000.0);
                        break;
                    }
                    Some(_) => {
                        eprintln!("{name}: stopped before the end");
                        code = 1;
                        break;
                    }
                    None => eprintln!("{name}: {:.1} s sent", p.sent_samples() as f64 / 16_000.0),
                }
            }
        }
        for (_, p) in publishers {
            p.stop().await;
        }
        code
    });
    std::process::exit(code);
}
