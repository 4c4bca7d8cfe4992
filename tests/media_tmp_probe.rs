use soustitre::media::*;
use std::time::Instant;
#[test]
fn probe() {
    for (name, rt) in [
        ("../shared/corpus/dev/utterances/synth/en_01.wav", false),
        ("/tmp/mt/a.opus", false),
        ("../shared/corpus/dev/utterances/synth/en_01.wav", true),
    ] {
        let t = Instant::now();
        let s = AudioSource::open(
            name,
            &DecodeSettings {
                realtime: rt,
                ..Default::default()
            },
        )
        .unwrap();
        let opened = t.elapsed();
        let mut sizes = std::collections::BTreeMap::new();
        for ev in s.receiver() {
            if let MediaEvent::Audio(c) = ev {
                *sizes.entry(c.samples.len()).or_insert(0) += 1;
            }
        }
        eprintln!(
            "{name} rt={rt} open={opened:?} total={:?} sizes={sizes:?} started={:?}",
            t.elapsed(),
            s.started_at().map(|x| x - t)
        );
    }
}
#[test]
fn probe_tiny() {
    let d = tempfile::tempdir().unwrap();
    for n in [0usize, 1, 3, 1000] {
        let p = d.path().join(format!("t{n}.wav"));
        let data = n * 2;
        let mut b = Vec::new();
        b.extend_from_slice(b"RIFF");
        b.extend_from_slice(&(36 + data as u32).to_le_bytes());
        b.extend_from_slice(b"WAVEfmt ");
        b.extend_from_slice(&16u32.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&16000u32.to_le_bytes());
        b.extend_from_slice(&32000u32.to_le_bytes());
        b.extend_from_slice(&2u16.to_le_bytes());
        b.extend_from_slice(&16u16.to_le_bytes());
        b.extend_from_slice(b"data");
        b.extend_from_slice(&(data as u32).to_le_bytes());
        b.extend(std::iter::repeat(7u8).take(data));
        std::fs::write(&p, b).unwrap();
        match AudioSource::open(p.to_str().unwrap(), &DecodeSettings::default()) {
            Err(e) => eprintln!("n={n}: open err {e}"),
            Ok(s) => {
                let evs: Vec<_> = s
                    .receiver()
                    .iter()
                    .map(|e| match e {
                        MediaEvent::Audio(c) => format!("A{}@{}", c.samples.len(), c.first_sample),
                        o => format!("{o:?}"),
                    })
                    .collect();
                eprintln!("n={n}: {evs:?}");
            }
        }
    }
}
