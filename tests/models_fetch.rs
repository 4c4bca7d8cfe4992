//! The model store against real model files: the shared mirror (a directory), a corrupted copy of
//! it, and an in-test HTTP server on 127.0.0.1. Uses Silero VAD (2.3 MB) to stay quick.
//!
//! The shared mirror is `$SOUSTITRE_MODEL_MIRROR` when that is a directory, else
//! `<repo>/../shared/models`; these tests fail (they do not skip) when neither exists.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use soustitre::models::{
    FileStatus, Mirror, ModelError, ModelStore, ProgressMode, STAMP_FILE, StoreSettings, bundles,
    fetch_all, sha256_file,
};

const SILERO: &str = "silero_vad.onnx";
const SILERO_BYTES: u64 = 2_327_524;
const SILERO_SHA: &str = "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3";

fn shared_mirror() -> PathBuf {
    if let Some(m) = std::env::var_os("SOUSTITRE_MODEL_MIRROR").map(PathBuf::from)
        && m.is_dir()
    {
        return m;
    }
    let sibling = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/models");
    assert!(
        sibling.join(SILERO).is_file(),
        "model mirror not found at {}: set SOUSTITRE_MODEL_MIRROR to the shared models directory",
        sibling.display()
    );
    sibling
}

fn store(dir: &Path, mirror: Option<Mirror>) -> ModelStore {
    ModelStore::new(dir, mirror)
        .with_settings(StoreSettings {
            progress: ProgressMode::Lines,
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(5),
        })
        .unwrap()
}

/// Every file under `dir`, relative, sorted (hidden temp files included).
fn files_in(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                walk(base, &e.path(), out);
            } else {
                let rel = e.path().strip_prefix(base).unwrap().to_owned();
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A copy of the silero model in a fresh mirror directory, with one byte flipped if `corrupt`.
fn mirror_copy(corrupt: bool) -> tempfile::TempDir {
    let m = tempfile::tempdir().unwrap();
    let mut bytes = fs::read(shared_mirror().join(SILERO)).unwrap();
    if corrupt {
        bytes[1_000_000] ^= 0x01;
    }
    fs::write(m.path().join(SILERO), bytes).unwrap();
    m
}

#[test]
fn fetches_silero_from_the_shared_mirror() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), Some(Mirror::Dir(shared_mirror())));
    let vad = store.ensure(bundles::SILERO_VAD).unwrap();

    let path = vad.require(SILERO).unwrap();
    assert_eq!(path, dir.path().join(SILERO));
    assert_eq!(vad.files()[0].status, FileStatus::Fetched);
    assert_eq!(fs::metadata(path).unwrap().len(), SILERO_BYTES);
    assert_eq!(sha256_file(path).unwrap(), SILERO_SHA);
    assert_eq!(
        files_in(dir.path()),
        [STAMP_FILE, SILERO],
        "no temp file left"
    );
    let stamp = fs::read_to_string(dir.path().join(STAMP_FILE)).unwrap();
    assert!(stamp.contains(SILERO_SHA), "{stamp}");
}

#[test]
fn corrupted_mirror_is_a_checksum_mismatch_and_leaves_nothing() {
    let mirror = mirror_copy(true);
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), Some(Mirror::Dir(mirror.path().into())));
    let err = store.ensure(bundles::SILERO_VAD).unwrap_err();
    let ModelError::ChecksumMismatch {
        file,
        expected,
        actual,
    } = &err
    else {
        panic!("expected ChecksumMismatch, got {err}");
    };
    assert_eq!(expected, SILERO_SHA);
    assert_ne!(actual, SILERO_SHA);
    assert!(file.ends_with(SILERO), "{file}");
    let msg = err.to_string();
    assert!(msg.contains(SILERO) && !msg.contains('\n'), "{msg}");
    assert!(
        !files_in(dir.path()).iter().any(|f| f.contains("silero")),
        "bad download left behind: {:?}",
        files_in(dir.path())
    );
}

#[test]
fn unknown_bundle_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), Some(Mirror::Dir(shared_mirror())));
    let err = store.ensure("whisper-large").unwrap_err();
    assert!(matches!(err, ModelError::UnknownBundle { .. }), "{err}");
    assert!(err.to_string().contains("whisper-large"), "{err}");
    assert!(
        err.to_string().contains(bundles::SILERO_VAD),
        "lists known: {err}"
    );
    assert!(files_in(dir.path()).is_empty());
}

#[test]
fn a_present_correct_file_is_not_copied_again() {
    let dir = tempfile::tempdir().unwrap();
    let first = store(dir.path(), Some(Mirror::Dir(shared_mirror())));
    first.ensure(bundles::SILERO_VAD).unwrap();
    let path = dir.path().join(SILERO);
    let before = fs::metadata(&path).unwrap();

    // A new store (as after a restart), with no mirror at all: only the local file can serve.
    let second = store(dir.path(), None);
    for _ in 0..2 {
        let vad = second.ensure(bundles::SILERO_VAD).unwrap();
        assert_eq!(
            vad.files()[0].status,
            FileStatus::Stamped,
            "trusted from the stamp"
        );
    }
    let after = fs::metadata(&path).unwrap();
    assert_eq!(before.modified().unwrap(), after.modified().unwrap());
    assert_eq!(before.ino(), after.ino(), "same file, not replaced");

    // verify re-hashes whatever the stamp says.
    let v = second.verify(bundles::SILERO_VAD).unwrap();
    assert_eq!(v.files()[0].status, FileStatus::Verified);
}

#[test]
fn a_file_copied_in_by_hand_is_hashed_once_then_trusted() {
    let dir = tempfile::tempdir().unwrap();
    fs::copy(shared_mirror().join(SILERO), dir.path().join(SILERO)).unwrap();
    let store = store(dir.path(), None);
    let s = |st: &ModelStore| st.ensure(bundles::SILERO_VAD).unwrap().files()[0].status;
    assert_eq!(s(&store), FileStatus::Verified);
    assert_eq!(s(&store), FileStatus::Stamped);
}

#[test]
fn a_corrupted_local_copy_is_fetched_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), Some(Mirror::Dir(shared_mirror())));
    store.ensure(bundles::SILERO_VAD).unwrap();
    let path = dir.path().join(SILERO);

    // Flip a byte in place, as bit rot or a stray write would, and move the mtime on.
    let mut bytes = fs::read(&path).unwrap();
    bytes[42] ^= 0xff;
    fs::write(&path, &bytes).unwrap();
    let later = SystemTime::now() + Duration::from_secs(5);
    fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(later)
        .unwrap();

    let vad = store.ensure(bundles::SILERO_VAD).unwrap();
    assert_eq!(vad.files()[0].status, FileStatus::Repaired);
    assert_eq!(sha256_file(&path).unwrap(), SILERO_SHA);
    assert_eq!(files_in(dir.path()), [STAMP_FILE, SILERO]);
    assert_eq!(
        store.ensure(bundles::SILERO_VAD).unwrap().files()[0].status,
        FileStatus::Stamped
    );
}

#[test]
fn a_replaced_file_with_the_same_size_and_mtime_is_rehashed() {
    let dir = tempfile::tempdir().unwrap();
    let store_m = store(dir.path(), Some(Mirror::Dir(shared_mirror())));
    store_m.ensure(bundles::SILERO_VAD).unwrap();
    let path = dir.path().join(SILERO);
    let mtime = fs::metadata(&path).unwrap().modified().unwrap();

    // A corrupt file of the same size and mtime renamed over the good one: only the inode differs.
    let mut bytes = fs::read(&path).unwrap();
    bytes[7] ^= 0x10;
    let other = dir.path().join("other");
    fs::write(&other, &bytes).unwrap();
    fs::File::options()
        .write(true)
        .open(&other)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    fs::rename(&other, &path).unwrap();

    // Without a mirror the corruption itself is the error, and the file is left for inspection.
    let err = store(dir.path(), None)
        .ensure(bundles::SILERO_VAD)
        .unwrap_err();
    assert!(
        matches!(&err, ModelError::ChecksumMismatch { file, .. } if file.ends_with(SILERO)),
        "{err}"
    );
    assert_eq!(fs::read(&path).unwrap(), bytes);

    // With a mirror that lacks the file too.
    let empty = tempfile::tempdir().unwrap();
    let err = store(dir.path(), Some(Mirror::Dir(empty.path().into())))
        .ensure(bundles::SILERO_VAD)
        .unwrap_err();
    assert!(matches!(err, ModelError::ChecksumMismatch { .. }), "{err}");

    // With the real mirror it is repaired.
    let vad = store_m.ensure(bundles::SILERO_VAD).unwrap();
    assert_eq!(vad.files()[0].status, FileStatus::Repaired);
}

#[test]
fn missing_from_a_directory_mirror() {
    let empty = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = store(dir.path(), Some(Mirror::Dir(empty.path().into())))
        .ensure(bundles::SILERO_VAD)
        .unwrap_err();
    let ModelError::MirrorMissing { file, mirror } = &err else {
        panic!("expected MirrorMissing, got {err}");
    };
    assert_eq!(file, SILERO);
    assert_eq!(mirror, &empty.path().display().to_string());
    assert!(files_in(dir.path()).is_empty());
}

#[test]
fn fetch_all_reports_each_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), Some(Mirror::Dir(shared_mirror())));
    let summary = fetch_all(&store, &[bundles::SILERO_VAD, "nope", bundles::SILERO_VAD]);
    assert!(!summary.is_success());
    let errors: Vec<_> = summary.errors().collect();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].0, "nope");
    assert_eq!(summary.copied(), (1, SILERO_BYTES), "copied once");
    let text = summary.to_string();
    assert!(text.contains("silero-vad: ok, 1 files"), "{text}");
    assert!(
        text.contains("nope: FAILED: unknown model bundle"),
        "{text}"
    );
    assert!(
        text.ends_with("3 bundles, 1 failed; 1 files copied (2.3 MB)"),
        "{text}"
    );

    let again = fetch_all(&store, &[bundles::SILERO_VAD]);
    assert!(again.is_success());
    assert_eq!(again.copied(), (0, 0));
}

// ---------------------------------------------------------------------------------------------
// HTTP mirror: a one-thread server on 127.0.0.1:0.

/// What the test server answers for a path.
#[derive(Clone)]
enum Reply {
    Body(Vec<u8>),
    Status(u16),
    /// Announces `declared` bytes, sends `body`, closes.
    Short {
        declared: usize,
        body: Vec<u8>,
    },
}

struct Server {
    base: String,
    requests: Arc<AtomicUsize>,
}

/// Serves `route(path)` for every GET, one connection at a time, `Connection: close`. The thread
/// lives until the test process exits.
fn serve(route: impl Fn(&str) -> Reply + Send + 'static) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/models", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let count = requests.clone();
    std::thread::Builder::new()
        .name("test-http-mirror".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                let _ = answer(stream, &route);
            }
        })
        .unwrap();
    Server { base, requests }
}

fn answer(mut stream: TcpStream, route: &impl Fn(&str) -> Reply) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" {
            break;
        }
    }
    let path = request_line.split(' ').nth(1).unwrap_or("/");
    let reply = match path.strip_prefix("/models/") {
        Some(p) if request_line.starts_with("GET ") => route(p),
        _ => Reply::Status(404),
    };
    let (status, declared, body) = match reply {
        Reply::Body(b) => (200, b.len(), b),
        Reply::Status(s) => (s, 0, Vec::new()),
        Reply::Short { declared, body } => (200, declared, body),
    };
    write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Length: {declared}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
    )?;
    stream.write_all(&body)?;
    stream.flush()
}

fn silero_bytes() -> Vec<u8> {
    fs::read(shared_mirror().join(SILERO)).unwrap()
}

#[test]
fn http_mirror_fetches_and_is_not_asked_twice() {
    let bytes = silero_bytes();
    let server = serve(move |p| match p {
        SILERO => Reply::Body(bytes.clone()),
        _ => Reply::Status(404),
    });
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), Some(Mirror::parse(&server.base).unwrap()));
    let vad = store.ensure(bundles::SILERO_VAD).unwrap();
    assert_eq!(vad.files()[0].status, FileStatus::Fetched);
    assert_eq!(sha256_file(&dir.path().join(SILERO)).unwrap(), SILERO_SHA);
    assert_eq!(server.requests.load(Ordering::SeqCst), 1);

    store.ensure(bundles::SILERO_VAD).unwrap();
    assert_eq!(
        server.requests.load(Ordering::SeqCst),
        1,
        "no second request"
    );
    assert_eq!(files_in(dir.path()), [STAMP_FILE, SILERO]);
}

#[test]
fn http_404_is_mirror_missing() {
    let server = serve(|_| Reply::Status(404));
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), Some(Mirror::parse(&server.base).unwrap()));
    let err = store.ensure(bundles::SILERO_VAD).unwrap_err();
    assert!(
        matches!(&err, ModelError::MirrorMissing { file, mirror } if file == SILERO && *mirror == server.base),
        "{err}"
    );
    assert!(files_in(dir.path()).is_empty());
}

#[test]
fn http_server_error_is_an_http_error() {
    let server = serve(|_| Reply::Status(503));
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), Some(Mirror::parse(&server.base).unwrap()));
    let err = store.ensure(bundles::SILERO_VAD).unwrap_err();
    let ModelError::Http { url, detail } = &err else {
        panic!("expected Http, got {err}");
    };
    assert_eq!(url, &format!("{}/{SILERO}", server.base));
    assert!(detail.contains("503"), "{detail}");
    assert!(files_in(dir.path()).is_empty());
}

#[test]
fn http_corrupt_body_is_a_checksum_mismatch() {
    let mut bytes = silero_bytes();
    bytes[123_456] ^= 0x80;
    let server = serve(move |_| Reply::Body(bytes.clone()));
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), Some(Mirror::parse(&server.base).unwrap()));
    let err = store.ensure(bundles::SILERO_VAD).unwrap_err();
    assert!(
        matches!(&err, ModelError::ChecksumMismatch { file, .. } if file.starts_with("http://")),
        "{err}"
    );
    assert!(
        files_in(dir.path()).iter().all(|f| !f.contains("silero")),
        "{:?}",
        files_in(dir.path())
    );
}

#[test]
fn http_wrong_length_bodies_are_rejected() {
    let bytes = silero_bytes();
    let shorter = bytes[..1000].to_vec();
    let mut longer = bytes.clone();
    longer.extend_from_slice(b"trailing junk");
    let cut = bytes[..5000].to_vec();

    // A complete but short body: size mismatch.
    let server = serve(move |_| Reply::Body(shorter.clone()));
    let dir = tempfile::tempdir().unwrap();
    let err = store(dir.path(), Some(Mirror::parse(&server.base).unwrap()))
        .ensure(bundles::SILERO_VAD)
        .unwrap_err();
    assert!(
        matches!(
            err,
            ModelError::SizeMismatch {
                expected: SILERO_BYTES,
                actual: 1000,
                ..
            }
        ),
        "{err}"
    );

    // A longer body: cut one byte past the expected size.
    let server = serve(move |_| Reply::Body(longer.clone()));
    let err = store(dir.path(), Some(Mirror::parse(&server.base).unwrap()))
        .ensure(bundles::SILERO_VAD)
        .unwrap_err();
    assert!(
        matches!(err, ModelError::SizeMismatch { actual, .. } if actual == SILERO_BYTES + 1),
        "{err}"
    );

    // The connection closes before Content-Length bytes: a transport error naming the URL.
    let server = serve(move |_| Reply::Short {
        declared: SILERO_BYTES as usize,
        body: cut.clone(),
    });
    let err = store(dir.path(), Some(Mirror::parse(&server.base).unwrap()))
        .ensure(bundles::SILERO_VAD)
        .unwrap_err();
    assert!(
        matches!(&err, ModelError::Http { url, .. } if url.ends_with(SILERO)),
        "{err}"
    );
    assert!(
        files_in(dir.path()).is_empty(),
        "{:?}",
        files_in(dir.path())
    );
}

#[test]
fn http_connection_refused_is_an_http_error() {
    // Bind then drop: nothing listens on that port any more.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let mirror = Mirror::parse(&format!("http://127.0.0.1:{port}/m")).unwrap();
    let err = store(dir.path(), Some(mirror))
        .ensure(bundles::SILERO_VAD)
        .unwrap_err();
    assert!(matches!(err, ModelError::Http { .. }), "{err}");
}
