//! A minimal reader for 16 kHz mono 16-bit PCM WAV files (the corpus format), for offline tools
//! that need the samples without a GStreamer pipeline.

use std::path::Path;

/// Errors reading a WAV file.
#[derive(Debug, thiserror::Error)]
pub enum WavError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Format { path: String, reason: String },
}

/// Samples of a 16 kHz mono 16-bit PCM WAV file, as int16 / 32768.
pub fn read_wav_mono16k(path: &Path) -> Result<Vec<f32>, WavError> {
    let p = path.display().to_string();
    let b = std::fs::read(path).map_err(|source| WavError::Io {
        path: p.clone(),
        source,
    })?;
    let bad = |reason: &str| WavError::Format {
        path: p.clone(),
        reason: reason.into(),
    };
    if b.len() < 12 || &b[0..4] != b"RIFF" || &b[8..12] != b"WAVE" {
        return Err(bad("not a RIFF/WAVE file"));
    }
    let mut i = 12;
    let mut format_ok = false;
    while i + 8 <= b.len() {
        let id = &b[i..i + 4];
        let len = u32::from_le_bytes([b[i + 4], b[i + 5], b[i + 6], b[i + 7]]) as usize;
        let body = &b[i + 8..(i + 8 + len).min(b.len())];
        if id == b"fmt " {
            if body.len() < 16 {
                return Err(bad("short fmt chunk"));
            }
            let u16_at = |k: usize| u16::from_le_bytes([body[k], body[k + 1]]);
            let rate = u32::from_le_bytes([body[4], body[5], body[6], body[7]]);
            if u16_at(0) != 1 || u16_at(2) != 1 || rate != 16_000 || u16_at(14) != 16 {
                return Err(bad("not 16 kHz mono 16-bit PCM"));
            }
            format_ok = true;
        } else if id == b"data" {
            if !format_ok {
                return Err(bad("data before fmt"));
            }
            return Ok(body
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as f32 / 32768.0)
                .collect());
        }
        i += 8 + len + (len & 1);
    }
    Err(bad("no data chunk"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pcm16_and_refuses_others() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = Vec::new();
        b.extend_from_slice(b"RIFF\0\0\0\0WAVEfmt ");
        b.extend_from_slice(&16u32.to_le_bytes());
        for v in [1u16, 1] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&16_000u32.to_le_bytes());
        b.extend_from_slice(&32_000u32.to_le_bytes());
        for v in [2u16, 16] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(b"data");
        b.extend_from_slice(&4u32.to_le_bytes());
        b.extend_from_slice(&16384i16.to_le_bytes());
        b.extend_from_slice(&(-32768i16).to_le_bytes());
        let p = dir.path().join("a.wav");
        std::fs::write(&p, &b).unwrap();
        assert_eq!(read_wav_mono16k(&p).unwrap(), vec![0.5, -1.0]);
        std::fs::write(&p, b"RIFFxxxxWAVE").unwrap();
        assert!(read_wav_mono16k(&p).is_err());
        std::fs::write(&p, b"junk").unwrap();
        assert!(read_wav_mono16k(&p).is_err());
    }
}
