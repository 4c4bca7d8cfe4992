//! Integration tests of the live `rtp-opus://` input of `soustitre::media` with real senders:
//! `gst-launch-1.0` processes that encode a corpus WAV to Opus and send it as RTP over UDP on
//! loopback, paced at real time (udpsink syncs on the clock).
//!
//! Waits are bounded: the receiver polls its channel with `recv_timeout`, and a test stops
//! reading once every sender has exited and no audio came for [`QUIET`].

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use soustitre::media::{
    AudioChunk, AudioSource, DEFAULT_JITTER_MS, DEFAULT_RTP_PAYLOAD, DecodeSettings, MediaError,
    MediaEvent, RtpOpusInput, SAMPLE_RATE,
};

/// Silence after the last sender exited that ends a reception.
const QUIET: Duration = Duration::from_secs(1);
/// Poll interval of the receiving loops (also the resolution of the measured pause).
const POLL: Duration = Duration::from_millis(10);
/// Upper bound of any one test's reception: a hung pipeline fails instead of hanging CI.
const DEADLINE: Duration = Duration::from_secs(60);
/// Jitter-buffer latency used by the tests: larger than the default so that two busy shared
/// cores (cargo building beside the tests) do not make packets late enough to be dropped.
const TEST_JITTER_MS: u32 = 200;

fn corpus() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/corpus/dev")).to_path_buf()
}

fn en_01() -> PathBuf {
    corpus().join("utterances/synth/en_01.wav")
}

/// The samples of a 16-bit mono 16 kHz WAV, in [-1, 1].
fn read_wav(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[0..4], b"RIFF");
    let mut pos = 12;
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let len = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap()) as usize;
        let body = &bytes[pos + 8..(pos + 8 + len).min(bytes.len())];
        match id {
            b"fmt " => {
                assert_eq!(u16::from_le_bytes([body[2], body[3]]), 1, "mono");
                let rate = u32::from_le_bytes(body[4..8].try_into().unwrap());
                assert_eq!(rate, SAMPLE_RATE);
                assert_eq!(u16::from_le_bytes([body[14], body[15]]), 16, "16-bit");
            }
            b"data" => {
                return body
                    .chunks_exact(2)
                    .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
                    .collect();
            }
            _ => {}
        }
        pos += 8 + len + (len & 1);
    }
    panic!("{}: no data chunk", path.display());
}

fn write_wav(path: &Path, samples: &[f32]) {
    let data_len = (samples.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + samples.len() * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16_u32.to_le_bytes());
    out.extend_from_slice(&1_u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1_u16.to_le_bytes()); // mono
    out.extend_from_slice(&SAMPLE_RATE.to_le_bytes());
    out.extend_from_slice(&(SAMPLE_RATE * 2).to_le_bytes());
    out.extend_from_slice(&2_u16.to_le_bytes());
    out.extend_from_slice(&16_u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        let v = (s * 32768.0).round().clamp(-32768.0, 32767.0) as i16;
        out.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, out).unwrap();
}

/// A UDP port that was free a moment ago (bound on 127.0.0.1:0, then released).
fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn open_rtp(port: u16, settings: &DecodeSettings) -> AudioSource {
    let uri = format!("rtp-opus://127.0.0.1:{port}?payload=96&jitter_ms={TEST_JITTER_MS}");
    AudioSource::open(&uri, settings).unwrap_or_else(|e| panic!("{uri}: {e}"))
}

/// A sender process: WAV → Opus → RTP (pt 96) → udp://127.0.0.1:`port`, at real time.
struct Sender(Child);

impl Sender {
    fn start(wav: &Path, port: u16) -> Sender {
        Sender::start_with(wav, port, &[], &[], &[])
    }

    /// With extra properties for `opusenc` and `rtpopuspay`, and extra elements between the
    /// payloader and the socket (`["!", "identity", ...]`).
    fn start_with(
        wav: &Path,
        port: u16,
        encoder: &[&str],
        payloader: &[&str],
        network: &[&str],
    ) -> Sender {
        let child = Command::new("gst-launch-1.0")
            .arg("-q")
            .arg("filesrc")
            .arg(format!("location={}", wav.display()))
            .args(["!", "wavparse", "!", "audioconvert", "!", "audioresample"])
            .args(["!", "opusenc"])
            .args(encoder)
            .args(["!", "rtpopuspay", "pt=96"])
            .args(payloader)
            .args(network)
            .args(["!", "udpsink", "host=127.0.0.1"])
            .arg(format!("port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("gst-launch-1.0 (gstreamer1.0-tools) is needed for the RTP tests");
        Sender(child)
    }

    /// `true` once the process has exited (and it exited well).
    fn exited(&mut self) -> bool {
        match self.0.try_wait().unwrap() {
            Some(status) => {
                assert!(status.success(), "sender failed: {status}");
                true
            }
            None => false,
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        // Only when a test fails midway: do not leave a sender running.
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Takes every event available within `wait`. Panics on anything but audio: a live input has no
/// EOS, and an error is a failure.
fn take(source: &AudioSource, wait: Duration, chunks: &mut Vec<AudioChunk>) -> usize {
    let mut taken = 0;
    let mut timeout = wait;
    while let Ok(event) = source.receiver().recv_timeout(timeout) {
        match event {
            MediaEvent::Audio(chunk) => chunks.push(chunk),
            other => panic!("unexpected event from a live input: {other:?}"),
        }
        taken += 1;
        timeout = Duration::ZERO;
    }
    taken
}

/// Receives until `sender` has exited and no audio came for [`QUIET`].
fn receive_until_quiet(source: &AudioSource, sender: &mut Sender, chunks: &mut Vec<AudioChunk>) {
    let deadline = Instant::now() + DEADLINE;
    let mut last_audio = Instant::now();
    loop {
        assert!(
            Instant::now() < deadline,
            "no end of reception in {DEADLINE:?}"
        );
        if take(source, POLL, chunks) > 0 {
            last_audio = Instant::now();
        }
        if sender.exited() && last_audio.elapsed() >= QUIET {
            return;
        }
    }
}

/// The chunks laid out on their timeline from the first one (gaps as zeros).
fn assemble(chunks: &[AudioChunk]) -> Vec<f32> {
    let origin = chunks[0].first_sample;
    let end = chunks.iter().map(AudioChunk::end_sample).max().unwrap();
    let mut out = vec![0.0; (end - origin) as usize];
    for chunk in chunks {
        let at = (chunk.first_sample - origin) as usize;
        out[at..at + chunk.samples.len()].copy_from_slice(&chunk.samples);
    }
    out
}

/// Jumps in the chunks' timeline: (index of the chunk after the jump, jump in samples).
fn jumps(chunks: &[AudioChunk]) -> Vec<(usize, i64)> {
    chunks
        .windows(2)
        .enumerate()
        .filter_map(|(i, pair)| {
            let jump = pair[1].first_sample as i64 - pair[0].end_sample() as i64;
            (jump != 0).then_some((i + 1, jump))
        })
        .collect()
}

/// Best normalised cross-correlation of `received` against `original` over lags
/// `0..=max_lag` samples (received is late: codec and resampler delay), on the whole overlap.
fn best_correlation(original: &[f32], received: &[f32], max_lag: usize) -> (f64, usize) {
    let mut best = (f64::MIN, 0);
    for lag in 0..=max_lag {
        let len = original.len().min(received.len().saturating_sub(lag));
        let (a, b) = (&original[..len], &received[lag..lag + len]);
        let dot: f64 = a
            .iter()
            .zip(b)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum();
        let ea: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum();
        let eb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum();
        let corr = dot / (ea * eb).sqrt().max(1e-12);
        if corr > best.0 {
            best = (corr, lag);
        }
    }
    best
}

fn ms_to_samples(duration: Duration) -> u64 {
    (duration.as_secs_f64() * f64::from(SAMPLE_RATE)) as u64
}

fn ms(samples: i64) -> f64 {
    samples as f64 * 1000.0 / f64::from(SAMPLE_RATE)
}

#[test]
fn a_sent_file_arrives_whole_and_recognisable() {
    let original = read_wav(&en_01());
    let port = free_port();
    let opened = Instant::now();
    let source = open_rtp(port, &DecodeSettings::default());
    let open_took = opened.elapsed();
    assert!(source.is_live());
    assert!(
        source.started_at().is_some(),
        "a live origin is set by open"
    );
    let mut sender = Sender::start(&en_01(), port);
    let mut chunks = Vec::new();
    receive_until_quiet(&source, &mut sender, &mut chunks);
    assert!(!chunks.is_empty(), "no audio received");

    let received: usize = chunks.iter().map(|c| c.samples.len()).sum();
    let difference = received as i64 - original.len() as i64;
    eprintln!(
        "received {} chunks, {:.3} s of audio for {:.3} s sent ({:+.1} ms); first sample at {:.3} s \
         (open took {:.1} ms); jumps {:?}; dropped {}",
        chunks.len(),
        received as f64 / f64::from(SAMPLE_RATE),
        original.len() as f64 / f64::from(SAMPLE_RATE),
        ms(difference),
        chunks[0].first_sample as f64 / f64::from(SAMPLE_RATE),
        open_took.as_secs_f64() * 1000.0,
        jumps(&chunks),
        source.dropped_samples(),
    );
    assert!(
        difference.unsigned_abs() <= u64::from(SAMPLE_RATE) / 10,
        "received {received} samples for {} sent",
        original.len()
    );
    assert_eq!(source.dropped_samples(), 0);
    // The first sample's index is its arrival on the clock that started at `open` (the sender
    // started after `open`): a leading gap, not sample 0.
    assert!(chunks[0].first_sample > 0);

    let audio = assemble(&chunks);
    let (corr, lag) = best_correlation(&original, &audio, 960);
    eprintln!(
        "correlation {corr:.3} at lag {lag} samples ({:.1} ms)",
        ms(lag as i64)
    );
    assert!(corr >= 0.8, "correlation {corr:.3} (lag {lag})");
}

#[test]
fn a_pause_between_senders_is_a_gap_of_the_pause() {
    const PAUSE: Duration = Duration::from_secs(2);
    let original = read_wav(&en_01());
    let dir = tempfile::tempdir().unwrap();
    let half = original.len() / 2;
    let (first, second) = (dir.path().join("first.wav"), dir.path().join("second.wav"));
    write_wav(&first, &original[..half]);
    write_wav(&second, &original[half..]);

    let port = free_port();
    let source = open_rtp(port, &DecodeSettings::default());
    let mut chunks = Vec::new();
    let deadline = Instant::now() + DEADLINE;

    let mut sender = Sender::start(&first, port);
    while !sender.exited() {
        assert!(Instant::now() < deadline, "first sender did not finish");
        take(&source, POLL, &mut chunks);
    }
    let first_exited = Instant::now();
    // The pause is the scenario, not a synchronisation: keep receiving meanwhile.
    while first_exited.elapsed() < PAUSE {
        take(
            &source,
            POLL.min(PAUSE.saturating_sub(first_exited.elapsed())),
            &mut chunks,
        );
    }
    // Nothing arrives during the pause, but the live edge moves on: a consumer can tell that
    // the audio up to there is missing before the stream resumes.
    let received_end = chunks.last().map(AudioChunk::end_sample).unwrap();
    let edge = source.live_edge().expect("a live input has an edge");
    let behind = Duration::from_millis(u64::from(TEST_JITTER_MS) + 100 + 50);
    let lower = ms_to_samples(PAUSE.saturating_sub(behind));
    assert!(
        edge >= received_end + lower,
        "edge {edge} after a pause of {PAUSE:?}: audio ended at {received_end}"
    );
    let second_started = Instant::now();
    let pause = second_started - first_exited;
    let before_resume = chunks.len();
    let mut sender = Sender::start(&second, port);
    receive_until_quiet(&source, &mut sender, &mut chunks);
    // Audio sent after the edge was read lies beyond it. Only the first stream's last chunk
    // may come behind it: `audiobuffersplit` holds the last < 20 ms of a stream until more audio
    // comes (then it flushes them at their own time, contiguous with what came before).
    let behind: Vec<_> = chunks[before_resume..]
        .iter()
        .filter(|c| c.first_sample < edge)
        .map(|c| (c.first_sample, c.samples.len()))
        .collect();
    assert!(
        behind.is_empty() || behind == [(received_end, 320)],
        "audio behind the edge {edge} (first stream ended at {received_end}): {behind:?}"
    );

    let jumps = jumps(&chunks);
    eprintln!(
        "measured pause {:.1} ms; {} chunks; jumps (chunk, ms): {:?}",
        pause.as_secs_f64() * 1000.0,
        chunks.len(),
        jumps.iter().map(|(i, j)| (*i, ms(*j))).collect::<Vec<_>>()
    );
    let long: Vec<_> = jumps.iter().filter(|(_, j)| ms(*j).abs() > 100.0).collect();
    assert_eq!(long.len(), 1, "one long jump expected: {jumps:?}");
    let (at, gap) = *long[0];
    let gap_s = gap as f64 / f64::from(SAMPLE_RATE);
    assert!(
        (gap_s - pause.as_secs_f64()).abs() <= 0.3,
        "gap {gap_s:.3} s for a pause of {:.3} s",
        pause.as_secs_f64()
    );
    // The gap separates the halves: about half the audio on each side.
    let before: usize = chunks[..at].iter().map(|c| c.samples.len()).sum();
    let after: usize = chunks[at..].iter().map(|c| c.samples.len()).sum();
    let tolerance = SAMPLE_RATE as usize / 10;
    assert!(
        before.abs_diff(half) <= tolerance,
        "{before} samples before the gap"
    );
    assert!(
        after.abs_diff(original.len() - half) <= tolerance,
        "{after} samples after the gap"
    );
    assert_eq!(source.dropped_samples(), 0);
}

#[test]
fn a_consumer_that_falls_behind_loses_the_oldest_audio_as_a_gap() {
    const QUEUE: usize = 4;
    let original = read_wav(&en_01());
    let port = free_port();
    let source = open_rtp(
        port,
        &DecodeSettings {
            queue_chunks: QUEUE,
            ..DecodeSettings::default()
        },
    );
    let mut sender = Sender::start(&en_01(), port);
    // Do not read while the file is sent: the streaming thread must not wait for us.
    let deadline = Instant::now() + DEADLINE;
    while !sender.exited() {
        assert!(Instant::now() < deadline, "sender did not finish");
        std::thread::sleep(POLL); // poll interval of the exit check, not a synchronisation
    }
    let mut chunks = Vec::new();
    receive_until_quiet(&source, &mut sender, &mut chunks);
    let kept: usize = chunks.iter().map(|c| c.samples.len()).sum();
    let dropped = source.dropped_samples() as usize;
    eprintln!(
        "kept {} chunks ({kept} samples), dropped {dropped} samples, first kept at {}",
        chunks.len(),
        chunks.first().map_or(0, |c| c.first_sample)
    );
    assert!(chunks.len() <= QUEUE, "{} chunks kept", chunks.len());
    // Everything received was either kept or dropped.
    let total = kept + dropped;
    assert!(
        total.abs_diff(original.len()) <= SAMPLE_RATE as usize / 10,
        "{total} samples for {}",
        original.len()
    );
    // The newest audio was kept: the kept chunks are the end of the stream, contiguous, and the
    // dropped audio is a jump before them (the consumer sees it as a gap).
    assert!(jumps(&chunks).is_empty(), "{:?}", jumps(&chunks));
    let first_kept = chunks[0].first_sample as usize;
    let origin_to_end = chunks.last().unwrap().end_sample() as usize;
    assert!(
        first_kept + QUEUE * 320 >= origin_to_end && first_kept >= dropped,
        "first kept sample {first_kept}, end {origin_to_end}, dropped {dropped}"
    );
}

#[test]
fn lost_packets_are_gaps_not_concealed() {
    let original = read_wav(&en_01());
    let port = free_port();
    let source = open_rtp(port, &DecodeSettings::default());
    // One packet in ten is lost on the way (at random: the checks hold whichever are lost).
    let mut sender = Sender::start_with(
        &en_01(),
        port,
        &[],
        &[],
        &["!", "identity", "drop-probability=0.1"],
    );
    let mut chunks = Vec::new();
    receive_until_quiet(&source, &mut sender, &mut chunks);
    let received: u64 = chunks.iter().map(|c| c.samples.len() as u64).sum();
    let jumps = jumps(&chunks);
    let lost: i64 = jumps.iter().map(|(_, j)| *j).sum();
    eprintln!(
        "received {:.3} s, {} jumps totalling {:.0} ms",
        received as f64 / f64::from(SAMPLE_RATE),
        jumps.len(),
        ms(lost)
    );
    assert!(!jumps.is_empty(), "10% loss and no gap");
    // Each loss is a jump forward, by about whole 20 ms packets: on loopback, exactly 320
    // samples per packet, give or take the resynchronisation of the 20 ms re-chunking with the
    // packets' timestamps (observed 317..331 samples under load, and the first jump can absorb
    // the ~10 ms by which the re-chunking started off them).
    for (_, jump) in &jumps {
        assert!(*jump > 0, "backward jump: {jumps:?}");
    }
    // What arrived plus what is reported missing is what was sent.
    let accounted = received as i64 + lost;
    assert!(
        (accounted - original.len() as i64).abs() <= i64::from(SAMPLE_RATE) / 10,
        "{accounted} samples accounted for {} sent",
        original.len()
    );
}

#[test]
fn dtx_silence_arrives_as_silence_not_as_gaps() {
    const SILENCE_S: usize = 2;
    let original = read_wav(&en_01());
    let half = original.len() / 2;
    let silence = SILENCE_S * SAMPLE_RATE as usize;
    let mut with_pause = original[..half].to_vec();
    with_pause.extend(std::iter::repeat_n(0.0, silence));
    with_pause.extend_from_slice(&original[half..]);
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("pause.wav");
    write_wav(&wav, &with_pause);

    let port = free_port();
    let source = open_rtp(port, &DecodeSettings::default());
    // Discontinuous transmission: during the silence the sender sends one packet every 400 ms.
    let mut sender = Sender::start_with(&wav, port, &["dtx=true"], &["dtx=true"], &[]);
    let mut chunks = Vec::new();
    receive_until_quiet(&source, &mut sender, &mut chunks);
    let jumps = jumps(&chunks);
    let received: usize = chunks.iter().map(|c| c.samples.len()).sum();
    eprintln!(
        "received {:.3} s for {:.3} s sent; jumps {jumps:?}",
        received as f64 / f64::from(SAMPLE_RATE),
        with_pause.len() as f64 / f64::from(SAMPLE_RATE)
    );
    assert!(jumps.is_empty(), "DTX silence reported as lost: {jumps:?}");
    assert!(
        received.abs_diff(with_pause.len()) <= SAMPLE_RATE as usize / 10,
        "{received} samples for {}",
        with_pause.len()
    );
    let audio = assemble(&chunks);
    let (corr, lag) = best_correlation(&with_pause, &audio, 960);
    assert!(corr >= 0.8, "correlation {corr:.3} (lag {lag})");
    // The middle of the pause is (near) silent.
    let middle = &audio[half + lag + silence / 4..half + lag + silence * 3 / 4];
    let rms =
        (middle.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>() / middle.len() as f64).sqrt();
    assert!(rms < 1e-3, "rms {rms} in the pause");
}

#[test]
fn open_does_not_wait_for_a_sender_and_there_is_no_eos() {
    let port = free_port();
    let opened = Instant::now();
    let source = open_rtp(port, &DecodeSettings::default());
    let took = opened.elapsed();
    assert!(took < Duration::from_secs(2), "open took {took:?}");
    let started = source.started_at().expect("origin set by open");
    assert!(started <= Instant::now() && started + Duration::from_secs(2) >= opened);
    match source.receiver().recv_timeout(Duration::from_millis(300)) {
        Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
        other => panic!("nothing expected without a sender, got {other:?}"),
    }
    // Dropping a silent live source is prompt and closes the channel.
    let receiver = source.receiver().clone();
    let dropping = Instant::now();
    drop(source);
    assert!(dropping.elapsed() < Duration::from_secs(2));
    assert!(matches!(
        receiver.recv_timeout(Duration::from_millis(100)),
        Err(crossbeam_channel::RecvTimeoutError::Disconnected)
    ));
}

#[test]
fn a_port_in_use_is_an_error_from_open() {
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let err = AudioSource::open(
        &format!("rtp-opus://127.0.0.1:{port}"),
        &DecodeSettings::default(),
    )
    .unwrap_err();
    assert!(
        matches!(err, MediaError::Pipeline(ref m) if m.contains("Address already in use")),
        "{err}"
    );
}

#[test]
fn malformed_rtp_uris_name_the_bad_part() {
    let cases = [
        ("rtp-opus://localhost:5004", "address"),
        ("rtp-opus://:5004", "address"),
        ("rtp-opus://::1:5004", "address"),
        ("rtp-opus://127.0.0.1", "port"),
        ("rtp-opus://127.0.0.1:0", "port"),
        ("rtp-opus://127.0.0.1:65536", "port"),
        ("rtp-opus://127.0.0.1:port", "port"),
        ("rtp-opus://127.0.0.1:5004?payload=0", "payload"),
        ("rtp-opus://127.0.0.1:5004?payload=128", "payload"),
        ("rtp-opus://127.0.0.1:5004?jitter_ms=2001", "jitter_ms"),
        ("rtp-opus://127.0.0.1:5004?jitter=60", "query"),
        ("rtp-opus://127.0.0.1:5004/room", "path"),
    ];
    for (input, part) in cases {
        let started = Instant::now();
        match AudioSource::open(input, &DecodeSettings::default()) {
            Err(MediaError::InvalidSettings { field, reason }) => {
                assert_eq!(field, part, "{input}: {reason}");
                assert!(reason.contains(input), "{input}: {reason}");
            }
            other => panic!("{input}: expected InvalidSettings for `{part}`, got {other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{input}: checked up front"
        );
    }
    // The defaults apply when the query is absent.
    let input = RtpOpusInput::parse("rtp-opus://127.0.0.1:5004")
        .unwrap()
        .unwrap();
    assert_eq!(
        (input.payload, input.jitter_ms),
        (DEFAULT_RTP_PAYLOAD, DEFAULT_JITTER_MS)
    );
    // Settings are still checked first.
    let err = AudioSource::open(
        "rtp-opus://127.0.0.1:5004",
        &DecodeSettings {
            queue_chunks: 0,
            ..DecodeSettings::default()
        },
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            MediaError::InvalidSettings {
                field: "queue_chunks",
                ..
            }
        ),
        "{err}"
    );
}
