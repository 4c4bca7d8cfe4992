//! The model directory: files from the manifest, fetched from a mirror when missing or corrupt,
//! verified by size and sha256, and stamped so that each file is hashed once.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::ModelError;
use super::manifest::{FileEntry, Manifest};
use super::mirror::{HttpSettings, Mirror};
use super::progress::{Progress, ProgressMode};
use super::stamp::{StampEntry, Stamps};

/// Default time allowed to open a TCP (and TLS) connection to an HTTP mirror.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default longest silence while reading from an HTTP mirror before giving up (a stall detector,
/// not a deadline for the whole file).
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Copy buffer size.
const COPY_BUFFER: usize = 1 << 20;

/// Knobs of the model store; `validate` is called once by `ModelStore::with_settings`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// Connect timeout for HTTP mirrors ([`DEFAULT_CONNECT_TIMEOUT`]).
    pub connect_timeout: Duration,
    /// Per-read timeout for HTTP mirrors ([`DEFAULT_READ_TIMEOUT`]).
    pub read_timeout: Duration,
    /// Progress display on stderr ([`ProgressMode::Auto`]).
    pub progress: ProgressMode,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            read_timeout: DEFAULT_READ_TIMEOUT,
            progress: ProgressMode::Auto,
        }
    }
}

impl StoreSettings {
    pub fn validate(&self) -> Result<(), ModelError> {
        for (field, value) in [
            ("connect_timeout", self.connect_timeout),
            ("read_timeout", self.read_timeout),
        ] {
            if value.is_zero() {
                return Err(ModelError::InvalidSettings {
                    field,
                    reason: "must be greater than zero".into(),
                });
            }
        }
        Ok(())
    }
}

/// What `ensure` / `verify` did for one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileStatus {
    /// Present and unchanged since it was last verified (stamp matched): not re-hashed.
    Stamped,
    /// Present, hashed now, correct.
    Verified,
    /// Was missing; fetched from the mirror and verified.
    Fetched,
    /// Was present but corrupt (size or sha256); fetched again from the mirror and verified.
    Repaired,
}

impl FileStatus {
    /// True when bytes were copied from the mirror.
    pub fn copied(self) -> bool {
        matches!(self, FileStatus::Fetched | FileStatus::Repaired)
    }
}

/// One verified file of a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedFile {
    /// Path in the manifest (`whisper-base/encoder.int8.onnx`).
    pub file: String,
    /// Where it is on disk.
    pub path: PathBuf,
    pub bytes: u64,
    pub status: FileStatus,
}

/// The verified files of one bundle, looked up by file name or manifest path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundlePaths {
    bundle: String,
    files: Vec<ResolvedFile>,
}

impl BundlePaths {
    pub fn name(&self) -> &str {
        &self.bundle
    }

    pub fn files(&self) -> &[ResolvedFile] {
        &self.files
    }

    /// The path of a file given by name (`encoder.int8.onnx`) or manifest path.
    pub fn get(&self, file: &str) -> Option<&Path> {
        self.files
            .iter()
            .find(|f| f.file == file || f.file.rsplit('/').next() == Some(file))
            .map(|f| f.path.as_path())
    }

    /// Like `get`, with an error naming the bundle and file.
    pub fn require(&self, file: &str) -> Result<&Path, ModelError> {
        self.get(file).ok_or_else(|| ModelError::UnknownFile {
            bundle: self.bundle.clone(),
            file: file.to_string(),
        })
    }
}

/// A model directory backed by a manifest and, optionally, a mirror.
///
/// ```no_run
/// use soustitre::models::{bundles, Mirror, ModelStore};
/// let store = ModelStore::new("models/cache", Some(Mirror::parse("../shared/models")?));
/// let vad = store.ensure(bundles::SILERO_VAD)?;
/// println!("{}", vad.require("silero_vad.onnx")?.display());
/// # Ok::<_, soustitre::models::ModelError>(())
/// ```
#[derive(Debug)]
pub struct ModelStore {
    dir: PathBuf,
    mirror: Option<Mirror>,
    manifest: Manifest,
    settings: StoreSettings,
    /// Serialises ensure/verify within the process (no two threads fetch the same file, and the
    /// stamp file has a single writer here).
    lock: Mutex<()>,
}

impl ModelStore {
    /// A store over `dir` using the embedded manifest and default settings. Nothing is touched on
    /// disk until `ensure` / `verify`.
    pub fn new(dir: impl Into<PathBuf>, mirror: Option<Mirror>) -> ModelStore {
        ModelStore {
            dir: dir.into(),
            mirror,
            // The embedded manifest is a build-time constant checked by unit tests.
            manifest: Manifest::embedded().expect("embedded models/manifest.toml is valid"),
            settings: StoreSettings::default(),
            lock: Mutex::new(()),
        }
    }

    /// The store an operator gets without configuration: `paths::default_model_dir()` and
    /// `paths::default_mirror()`.
    pub fn open_default() -> Result<ModelStore, crate::paths::PathsError> {
        Ok(ModelStore::new(
            crate::paths::default_model_dir(),
            crate::paths::default_mirror()?,
        ))
    }

    /// Uses another manifest (e.g. `Manifest::load` of an edited file, or a test manifest).
    pub fn with_manifest(mut self, manifest: Manifest) -> ModelStore {
        self.manifest = manifest;
        self
    }

    /// Uses other settings, validated here.
    pub fn with_settings(mut self, settings: StoreSettings) -> Result<ModelStore, ModelError> {
        settings.validate()?;
        self.settings = settings;
        Ok(self)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn mirror(&self) -> Option<&Mirror> {
        self.mirror.as_ref()
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn settings(&self) -> &StoreSettings {
        &self.settings
    }

    /// Where a bundle's file lives in the model directory (by file name or manifest path). Does
    /// not check that it is there: use `ensure` for that.
    pub fn path(&self, bundle: &str, file: &str) -> Result<PathBuf, ModelError> {
        let entry = self.manifest.bundle_file(bundle, file)?;
        Ok(self.dir.join(&entry.path))
    }

    /// Makes every file of `bundle` present and verified: stamped files are trusted, others are
    /// hashed, missing or corrupt ones fetched from the mirror (temp file in the same directory,
    /// hashed while copying, renamed into place only once size and sha256 match).
    pub fn ensure(&self, bundle: &str) -> Result<BundlePaths, ModelError> {
        let entries = self.manifest.bundle_files(bundle)?;
        self.each_file(bundle, entries, |e, stamps| self.ensure_file(e, stamps))
    }

    /// Re-hashes every file of `bundle` whatever the stamp says; fetches nothing. A missing file
    /// is an `Io` (not found) error, a corrupt one `SizeMismatch` / `ChecksumMismatch`.
    pub fn verify(&self, bundle: &str) -> Result<BundlePaths, ModelError> {
        let entries = self.manifest.bundle_files(bundle)?;
        self.each_file(bundle, entries, |e, stamps| {
            let target = self.dir.join(&e.path);
            let meta = fs::metadata(&target).map_err(|err| ModelError::io(&target, err))?;
            match check_local(&target, &meta, e) {
                Ok(()) => {
                    stamps.record(&e.path, StampEntry::of(&meta, &e.sha256));
                    Ok(FileStatus::Verified)
                }
                Err(err) => {
                    stamps.forget(&e.path);
                    Err(err)
                }
            }
        })
    }

    fn each_file(
        &self,
        bundle: &str,
        entries: Vec<&FileEntry>,
        mut step: impl FnMut(&FileEntry, &mut Stamps) -> Result<FileStatus, ModelError>,
    ) -> Result<BundlePaths, ModelError> {
        let _serial = self
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut stamps = Stamps::load(&self.dir);
        let mut files = Vec::with_capacity(entries.len());
        let mut result = Ok(());
        for e in entries {
            match step(e, &mut stamps) {
                Ok(status) => files.push(ResolvedFile {
                    file: e.path.clone(),
                    path: self.dir.join(&e.path),
                    bytes: e.bytes,
                    status,
                }),
                Err(err) => {
                    result = Err(err);
                    break;
                }
            }
        }
        // Keep what was learnt even when a later file failed.
        if self.dir.is_dir()
            && let Err(err) = stamps.save(&self.dir)
        {
            tracing::warn!(dir = %self.dir.display(), error = %err,
                "cannot write the model stamp file; files will be hashed again next time");
        }
        result.map(|()| BundlePaths {
            bundle: bundle.to_string(),
            files,
        })
    }

    fn ensure_file(&self, e: &FileEntry, stamps: &mut Stamps) -> Result<FileStatus, ModelError> {
        let target = self.dir.join(&e.path);
        let meta = match fs::metadata(&target) {
            Ok(meta) => meta,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                self.fetch(e, stamps)?;
                return Ok(FileStatus::Fetched);
            }
            Err(err) => return Err(ModelError::io(&target, err)),
        };
        if !meta.is_file() {
            return Err(ModelError::io(
                &target,
                io::Error::other("exists but is not a regular file"),
            ));
        }
        if meta.len() == e.bytes && stamps.is_fresh(&e.path, &meta, &e.sha256) {
            return Ok(FileStatus::Stamped);
        }
        let problem = match check_local(&target, &meta, e) {
            Ok(()) => {
                stamps.record(&e.path, StampEntry::of(&meta, &e.sha256));
                return Ok(FileStatus::Verified);
            }
            Err(
                problem @ (ModelError::SizeMismatch { .. } | ModelError::ChecksumMismatch { .. }),
            ) => problem,
            Err(other) => return Err(other),
        };
        stamps.forget(&e.path);
        tracing::warn!(file = %target.display(), problem = %problem,
            "model file is corrupt, fetching it again");
        match self.fetch(e, stamps) {
            Ok(()) => Ok(FileStatus::Repaired),
            // Nothing to repair from: the corruption is the error to report.
            Err(ModelError::NoMirror { .. } | ModelError::MirrorMissing { .. }) => Err(problem),
            Err(other) => Err(other),
        }
    }

    /// Copies `e` from the mirror into place. On any error the temp file is removed and the
    /// target is left as it was.
    fn fetch(&self, e: &FileEntry, stamps: &mut Stamps) -> Result<(), ModelError> {
        let mirror = self.mirror.as_ref().ok_or_else(|| ModelError::NoMirror {
            file: e.path.clone(),
            dir: self.dir.clone(),
        })?;
        let source = mirror.location(&e.path);
        tracing::info!(file = %e.path, from = %source, bytes = e.bytes, "fetching model file");
        let http = HttpSettings {
            connect_timeout: self.settings.connect_timeout,
            read_timeout: self.settings.read_timeout,
        };
        // Open the source first: a file missing from the mirror creates nothing locally.
        let mut reader = mirror.open(&e.path, e.bytes, &http)?;

        let target = self.dir.join(&e.path);
        let parent = target.parent().unwrap_or(&self.dir);
        fs::create_dir_all(parent).map_err(|err| ModelError::io(parent, err))?;
        let mut tmp = TempFile::create(parent, e.file_name())?;

        let mut progress = Progress::new(
            self.settings.progress,
            format!("{} (from {mirror})", e.path),
            e.bytes,
        );
        // Read at most one byte more than expected: enough to tell "too long" without filling
        // the disk from a misbehaving server.
        let copied = copy_hashing(
            &mut reader.by_ref().take(e.bytes + 1),
            &mut tmp.file,
            &mut progress,
        );
        let (n, actual) = match copied {
            Ok(v) => v,
            Err(CopyError::Read(err)) => {
                return Err(match mirror {
                    Mirror::Http(_) => ModelError::Http {
                        url: source,
                        detail: err.to_string(),
                    },
                    Mirror::Dir(_) => ModelError::io(source, err),
                });
            }
            Err(CopyError::Write(err)) => return Err(ModelError::io(&tmp.path, err)),
        };
        if n != e.bytes {
            return Err(ModelError::SizeMismatch {
                file: source,
                expected: e.bytes,
                actual: n,
            });
        }
        if actual != e.sha256 {
            return Err(ModelError::ChecksumMismatch {
                file: source,
                expected: e.sha256.clone(),
                actual,
            });
        }
        tmp.file
            .sync_all()
            .map_err(|err| ModelError::io(&tmp.path, err))?;
        progress.finish(true);
        tmp.persist(&target)?;
        // Make the rename durable; failure here only risks a re-fetch after a power cut.
        if let Ok(d) = File::open(parent) {
            let _ = d.sync_all();
        }
        let meta = fs::metadata(&target).map_err(|err| ModelError::io(&target, err))?;
        stamps.record(&e.path, StampEntry::of(&meta, &e.sha256));
        Ok(())
    }
}

/// Size then sha256 of a local file against its manifest entry.
fn check_local(path: &Path, meta: &fs::Metadata, e: &FileEntry) -> Result<(), ModelError> {
    if meta.len() != e.bytes {
        return Err(ModelError::SizeMismatch {
            file: path.display().to_string(),
            expected: e.bytes,
            actual: meta.len(),
        });
    }
    let actual = sha256_file(path)?;
    if actual != e.sha256 {
        return Err(ModelError::ChecksumMismatch {
            file: path.display().to_string(),
            expected: e.sha256.clone(),
            actual,
        });
    }
    Ok(())
}

/// The lowercase hex sha256 of a file.
pub fn sha256_file(path: &Path) -> Result<String, ModelError> {
    let mut f = File::open(path).map_err(|e| ModelError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; COPY_BUFFER];
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ModelError::io(path, e)),
        };
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

fn copy_hashing(
    reader: &mut impl Read,
    writer: &mut impl Write,
    progress: &mut Progress,
) -> Result<(u64, String), CopyError> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        hasher.update(&buf[..n]);
        writer.write_all(&buf[..n]).map_err(CopyError::Write)?;
        total += n as u64;
        progress.advance(n as u64);
    }
    writer.flush().map_err(CopyError::Write)?;
    Ok((total, hex::encode(hasher.finalize())))
}

/// A hidden temp file next to its target, removed on drop unless persisted.
struct TempFile {
    path: PathBuf,
    file: File,
    persisted: bool,
}

impl TempFile {
    fn create(dir: &Path, name: &str) -> Result<TempFile, ModelError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!(".{name}.part-{}-{n}", std::process::id()));
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| ModelError::io(&path, e))?;
        Ok(TempFile {
            path,
            file,
            persisted: false,
        })
    }

    fn persist(mut self, target: &Path) -> Result<(), ModelError> {
        fs::rename(&self.path, target).map_err(|e| ModelError::io(target, e))?;
        self.persisted = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ABC_SHA: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    fn manifest() -> Manifest {
        let text = format!(
            r#"schema = 1
[[file]]
path = "sub/abc.bin"
bytes = 3
sha256 = "{ABC_SHA}"
license = "MIT"
source = "test"
[bundle.t]
files = ["sub/abc.bin"]
"#
        );
        Manifest::parse(&text, "test").unwrap()
    }

    fn quiet(store: ModelStore) -> ModelStore {
        store
            .with_manifest(manifest())
            .with_settings(StoreSettings {
                progress: ProgressMode::Quiet,
                ..Default::default()
            })
            .unwrap()
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type().unwrap().is_dir() {
                out.extend(
                    files_in(&entry.path())
                        .into_iter()
                        .map(|f| format!("{name}/{f}")),
                );
            } else {
                out.push(name);
            }
        }
        out.sort();
        out
    }

    #[test]
    fn fetch_verify_stamp_cycle() {
        let mirror = tempfile::tempdir().unwrap();
        fs::create_dir(mirror.path().join("sub")).unwrap();
        fs::write(mirror.path().join("sub/abc.bin"), b"abc").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = quiet(ModelStore::new(
            dir.path(),
            Some(Mirror::Dir(mirror.path().into())),
        ));

        let b = store.ensure("t").unwrap();
        assert_eq!(b.files()[0].status, FileStatus::Fetched);
        assert_eq!(
            b.require("abc.bin").unwrap(),
            dir.path().join("sub/abc.bin")
        );
        assert_eq!(fs::read(dir.path().join("sub/abc.bin")).unwrap(), b"abc");
        assert_eq!(files_in(dir.path()), [".verified", "sub/abc.bin"]);

        assert_eq!(
            store.ensure("t").unwrap().files()[0].status,
            FileStatus::Stamped
        );
        assert_eq!(
            store.verify("t").unwrap().files()[0].status,
            FileStatus::Verified
        );

        // A fresh stamp file is not required: without it the file is hashed once more.
        fs::remove_file(dir.path().join(".verified")).unwrap();
        assert_eq!(
            store.ensure("t").unwrap().files()[0].status,
            FileStatus::Verified
        );
        assert_eq!(
            store.ensure("t").unwrap().files()[0].status,
            FileStatus::Stamped
        );
    }

    #[test]
    fn wrong_size_in_mirror_is_refused_before_copy() {
        let mirror = tempfile::tempdir().unwrap();
        fs::create_dir(mirror.path().join("sub")).unwrap();
        fs::write(mirror.path().join("sub/abc.bin"), b"abcd").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = quiet(ModelStore::new(
            dir.path(),
            Some(Mirror::Dir(mirror.path().into())),
        ));
        let err = store.ensure("t").unwrap_err();
        assert!(
            matches!(
                err,
                ModelError::SizeMismatch {
                    expected: 3,
                    actual: 4,
                    ..
                }
            ),
            "{err}"
        );
        assert!(files_in(dir.path()).iter().all(|f| !f.contains("abc")));
    }

    #[test]
    fn missing_without_mirror_says_how_to_configure() {
        let dir = tempfile::tempdir().unwrap();
        let store = quiet(ModelStore::new(dir.path(), None));
        let err = store.ensure("t").unwrap_err();
        assert!(matches!(err, ModelError::NoMirror { .. }));
        let msg = err.to_string();
        assert!(
            msg.contains("sub/abc.bin") && msg.contains("SOUSTITRE_MODEL_MIRROR"),
            "{msg}"
        );
        let err = store.verify("t").unwrap_err();
        assert!(matches!(err, ModelError::Io { .. }), "{err}");
    }

    #[test]
    fn wrong_local_size_without_mirror_is_size_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("sub/abc.bin"), b"ab").unwrap();
        let store = quiet(ModelStore::new(dir.path(), None));
        let err = store.ensure("t").unwrap_err();
        assert!(
            matches!(err, ModelError::SizeMismatch { actual: 2, .. }),
            "{err}"
        );
        assert_eq!(
            fs::read(dir.path().join("sub/abc.bin")).unwrap(),
            b"ab",
            "left as is"
        );
    }

    #[test]
    fn settings_are_validated() {
        let err = ModelStore::new("x", None)
            .with_settings(StoreSettings {
                read_timeout: Duration::ZERO,
                ..Default::default()
            })
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "model store setting `read_timeout`: must be greater than zero"
        );
    }

    #[test]
    fn path_resolves_without_touching_disk() {
        let store = ModelStore::new("/nonexistent/models", None);
        assert_eq!(
            store.path("whisper-base", "encoder.int8.onnx").unwrap(),
            Path::new("/nonexistent/models/whisper-base/encoder.int8.onnx")
        );
        assert_eq!(
            store
                .path("whisper-tiny.en", "whisper80_conv.onnx")
                .unwrap(),
            Path::new("/nonexistent/models/whisper80_conv.onnx")
        );
        assert!(matches!(
            store.path("whisper-base", "nope.onnx"),
            Err(ModelError::UnknownFile { .. })
        ));
        assert!(matches!(
            store.path("nope", "x"),
            Err(ModelError::UnknownBundle { .. })
        ));
    }

    #[test]
    fn sha256_of_known_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, b"abc").unwrap();
        assert_eq!(sha256_file(&p).unwrap(), ABC_SHA);
    }
}
