//! The verification stamp: a small text file in the model directory remembering the size, mtime
//! and sha256 of files already hashed, so an 80 MB model is hashed once rather than at every start.
//!
//! Format (`<model dir>/.verified`), one line per file, `#` comments ignored:
//! `<sha256> <size> <mtime in ns since the epoch> <inode> <manifest path>`.
//! A stamp entry counts only if size, mtime, inode and sha256 all match the file and the manifest;
//! any doubt means the file is hashed again. Like any size+mtime cache, a same-size edit in place
//! within the filesystem's timestamp granularity of the verification goes unseen: `verify`
//! re-hashes regardless. The file is rewritten atomically (temp + rename); two
//! processes updating it at once can lose an entry, which only costs a re-hash.

use std::collections::BTreeMap;
use std::fs::{self, Metadata};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

/// Name of the stamp file inside the model directory (hidden: manifest paths cannot collide).
pub const STAMP_FILE: &str = ".verified";

const HEADER: &str = "# soustitre verified models v1: sha256 size mtime_ns inode path\n";

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StampEntry {
    pub sha256: String,
    pub size: u64,
    pub mtime_ns: u128,
    pub ino: u64,
}

impl StampEntry {
    /// The entry describing `meta` with a known hash, or `None` when the mtime is unavailable.
    pub fn of(meta: &Metadata, sha256: &str) -> Option<StampEntry> {
        Some(StampEntry {
            sha256: sha256.to_string(),
            size: meta.len(),
            mtime_ns: mtime_ns(meta)?,
            ino: meta.ino(),
        })
    }
}

fn mtime_ns(meta: &Metadata) -> Option<u128> {
    Some(
        meta.modified()
            .ok()?
            .duration_since(UNIX_EPOCH)
            .ok()?
            .as_nanos(),
    )
}

/// The stamps of one model directory.
#[derive(Debug, Default)]
pub(crate) struct Stamps {
    entries: BTreeMap<String, StampEntry>,
    dirty: bool,
}

impl Stamps {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(STAMP_FILE)
    }

    /// Reads the stamp file; a missing or unreadable file is an empty stamp (we just re-hash).
    pub fn load(dir: &Path) -> Stamps {
        let mut entries = BTreeMap::new();
        if let Ok(text) = fs::read_to_string(Self::path(dir)) {
            for line in text.lines() {
                if line.starts_with('#') {
                    continue;
                }
                let mut it = line.splitn(5, ' ');
                let (Some(sha), Some(size), Some(mtime), Some(ino), Some(path)) =
                    (it.next(), it.next(), it.next(), it.next(), it.next())
                else {
                    continue;
                };
                let (Ok(size), Ok(mtime_ns), Ok(ino)) = (size.parse(), mtime.parse(), ino.parse())
                else {
                    continue;
                };
                entries.insert(
                    path.to_string(),
                    StampEntry {
                        sha256: sha.to_string(),
                        size,
                        mtime_ns,
                        ino,
                    },
                );
            }
        }
        Stamps {
            entries,
            dirty: false,
        }
    }

    /// True when `file` was verified with this sha256 and has not changed since.
    pub fn is_fresh(&self, file: &str, meta: &Metadata, sha256: &str) -> bool {
        match (self.entries.get(file), mtime_ns(meta)) {
            (Some(e), Some(mtime)) => {
                e.sha256 == sha256
                    && e.size == meta.len()
                    && e.mtime_ns == mtime
                    && e.ino == meta.ino()
            }
            _ => false,
        }
    }

    pub fn record(&mut self, file: &str, entry: Option<StampEntry>) {
        match entry {
            Some(e) => {
                if self.entries.get(file) != Some(&e) {
                    self.entries.insert(file.to_string(), e);
                    self.dirty = true;
                }
            }
            None => self.forget(file),
        }
    }

    pub fn forget(&mut self, file: &str) {
        if self.entries.remove(file).is_some() {
            self.dirty = true;
        }
    }

    /// Writes the stamp file if anything changed (temp file + rename).
    pub fn save(&mut self, dir: &Path) -> std::io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let mut text = String::from(HEADER);
        for (path, e) in &self.entries {
            text.push_str(&format!(
                "{} {} {} {} {path}\n",
                e.sha256, e.size, e.mtime_ns, e.ino
            ));
        }
        let tmp = dir.join(format!("{STAMP_FILE}.{}.tmp", std::process::id()));
        let result = (|| {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, Self::path(dir))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        } else {
            self.dirty = false;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_freshness() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.onnx");
        fs::write(&file, b"abc").unwrap();
        let meta = fs::metadata(&file).unwrap();

        let mut s = Stamps::load(dir.path());
        assert!(!s.is_fresh("m.onnx", &meta, "aa"));
        s.record("m.onnx", StampEntry::of(&meta, "aa"));
        s.save(dir.path()).unwrap();

        let s = Stamps::load(dir.path());
        assert!(s.is_fresh("m.onnx", &meta, "aa"));
        assert!(!s.is_fresh("m.onnx", &meta, "bb"), "other sha");
        assert!(!s.is_fresh("other.onnx", &meta, "aa"));

        // Same size, different content and mtime: no longer fresh.
        let f = fs::OpenOptions::new().write(true).open(&file).unwrap();
        f.set_modified(UNIX_EPOCH + std::time::Duration::from_secs(1_000_000))
            .unwrap();
        let meta2 = fs::metadata(&file).unwrap();
        assert!(!s.is_fresh("m.onnx", &meta2, "aa"));
    }

    #[test]
    fn garbage_lines_are_ignored_and_forget_works() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            Stamps::path(dir.path()),
            "# header\nnonsense\naa x 1 2 a.onnx\naa 3 12 7 b.onnx\naa 3 12 b.onnx\n",
        )
        .unwrap();
        let mut s = Stamps::load(dir.path());
        assert_eq!(s.entries.len(), 1);
        s.forget("b.onnx");
        s.save(dir.path()).unwrap();
        assert!(Stamps::load(dir.path()).entries.is_empty());
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "only the stamp file, no temp");
    }
}
