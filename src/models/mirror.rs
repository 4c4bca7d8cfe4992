//! Where model files are fetched from: a local directory (or `file://` URL) laid out like the
//! manifest, or an `http://` / `https://` base URL serving the same layout.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use super::ModelError;

/// A model mirror. Paths from the manifest are appended to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mirror {
    /// A directory holding the files (the shared `models/` folder, a mounted volume...).
    Dir(PathBuf),
    /// A base URL without trailing slash, e.g. `https://models.example.org/soustitre`.
    Http(String),
}

impl Mirror {
    /// Parses a mirror: `http://...` or `https://...` (base URL), `file:///abs/dir`, or a plain
    /// directory path. Does not touch the filesystem or network; a missing directory shows up as
    /// `MirrorMissing` when a file is fetched.
    pub fn parse(s: &str) -> Result<Mirror, ModelError> {
        let bad = |reason: &str| ModelError::InvalidMirror {
            mirror: s.to_string(),
            reason: reason.to_string(),
        };
        let t = s.trim();
        if t.is_empty() {
            return Err(bad("empty"));
        }
        if let Some((scheme, rest)) = t.split_once("://") {
            let scheme_ok = !scheme.is_empty()
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
            if scheme_ok {
                return match scheme.to_ascii_lowercase().as_str() {
                    "http" | "https" => {
                        let host = rest.split('/').next().unwrap_or("");
                        if host.is_empty() {
                            return Err(bad("the URL has no host"));
                        }
                        if rest.contains(['?', '#']) {
                            return Err(bad("a mirror base URL cannot have a query or fragment"));
                        }
                        if t.contains(char::is_whitespace) {
                            return Err(bad("the URL contains spaces"));
                        }
                        let scheme = scheme.to_ascii_lowercase();
                        Ok(Mirror::Http(format!(
                            "{scheme}://{}",
                            rest.trim_end_matches('/')
                        )))
                    }
                    "file" => {
                        // file:///abs/path or file://localhost/abs/path
                        let path = rest.strip_prefix("localhost").unwrap_or(rest);
                        if !path.starts_with('/') {
                            return Err(bad(
                                "a file:// URL needs an absolute path (file:///dir) and no host",
                            ));
                        }
                        let decoded = percent_decode(path).ok_or_else(|| {
                            bad("the file:// URL has an invalid %-escape or is not UTF-8")
                        })?;
                        Ok(Mirror::Dir(PathBuf::from(decoded)))
                    }
                    other => Err(bad(&format!(
                        "unsupported scheme `{other}` (use a directory, file://, http:// or https://)"
                    ))),
                };
            }
        }
        Ok(Mirror::Dir(PathBuf::from(t)))
    }

    /// Where a manifest path is found in this mirror (a path or a URL), for messages.
    pub fn location(&self, file: &str) -> String {
        match self {
            Mirror::Dir(dir) => dir.join(file).display().to_string(),
            Mirror::Http(base) => format!("{base}/{file}"),
        }
    }

    /// Opens `file` (a checked manifest path) for reading. `expected` is the manifest size; a
    /// local file of another size is refused before any copy.
    pub(crate) fn open(
        &self,
        file: &str,
        expected: u64,
        http: &HttpSettings,
    ) -> Result<Box<dyn Read + Send>, ModelError> {
        match self {
            Mirror::Dir(dir) => open_local(dir, file, expected, self),
            Mirror::Http(base) => open_http(base, file, http, self),
        }
    }
}

impl fmt::Display for Mirror {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mirror::Dir(d) => write!(f, "{}", d.display()),
            Mirror::Http(u) => f.write_str(u),
        }
    }
}

impl FromStr for Mirror {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mirror::parse(s)
    }
}

/// The HTTP knobs the store passes down (from `StoreSettings`).
#[derive(Debug, Clone)]
pub(crate) struct HttpSettings {
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
}

fn open_local(
    dir: &Path,
    file: &str,
    expected: u64,
    mirror: &Mirror,
) -> Result<Box<dyn Read + Send>, ModelError> {
    let path = dir.join(file);
    let f = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ModelError::MirrorMissing {
                file: file.to_string(),
                mirror: mirror.to_string(),
            });
        }
        Err(e) => return Err(ModelError::io(&path, e)),
    };
    let meta = f.metadata().map_err(|e| ModelError::io(&path, e))?;
    if !meta.is_file() {
        return Err(ModelError::MirrorMissing {
            file: file.to_string(),
            mirror: mirror.to_string(),
        });
    }
    if meta.len() != expected {
        return Err(ModelError::SizeMismatch {
            file: path.display().to_string(),
            expected,
            actual: meta.len(),
        });
    }
    Ok(Box::new(f))
}

fn open_http(
    base: &str,
    file: &str,
    http: &HttpSettings,
    mirror: &Mirror,
) -> Result<Box<dyn Read + Send>, ModelError> {
    // Manifest paths are checked to need no escaping (see manifest::check_path).
    let url = format!("{base}/{file}");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(http.connect_timeout))
        // A stall detector rather than a global deadline: large files on slow links are fine.
        .timeout_per_read(Some(http.read_timeout))
        .http_status_as_error(false)
        .user_agent(concat!("soustitre/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let response = agent.get(&url).call().map_err(|e| ModelError::Http {
        url: url.clone(),
        detail: e.to_string(),
    })?;
    let status = response.status();
    if status == 404 || status == 410 {
        return Err(ModelError::MirrorMissing {
            file: file.to_string(),
            mirror: mirror.to_string(),
        });
    }
    if !status.is_success() {
        return Err(ModelError::Http {
            url,
            detail: format!("HTTP status {status}"),
        });
    }
    let reader = response.into_body().into_reader();
    Ok(Box::new(HttpReader { inner: reader, url }))
}

/// Adds the URL to transport errors met while streaming the body.
struct HttpReader<R> {
    inner: R,
    url: String,
}

impl<R: Read> Read for HttpReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner
            .read(buf)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", self.url)))
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(p: &str) -> Mirror {
        Mirror::Dir(PathBuf::from(p))
    }

    #[test]
    fn parses_directories() {
        assert_eq!(Mirror::parse("/srv/models").unwrap(), dir("/srv/models"));
        assert_eq!(
            Mirror::parse("  ../shared/models ").unwrap(),
            dir("../shared/models")
        );
        assert_eq!(
            Mirror::parse("C:relative").unwrap(),
            dir("C:relative"),
            "no `://`, so a path"
        );
    }

    #[test]
    fn parses_http_urls() {
        assert_eq!(
            Mirror::parse("https://models.example.org/soustitre/").unwrap(),
            Mirror::Http("https://models.example.org/soustitre".into())
        );
        assert_eq!(
            Mirror::parse("HTTP://127.0.0.1:8080").unwrap(),
            Mirror::Http("http://127.0.0.1:8080".into())
        );
        let m = Mirror::parse("http://h:1/base//").unwrap();
        assert_eq!(m.location("a/b.onnx"), "http://h:1/base/a/b.onnx");
        assert_eq!(m.to_string(), "http://h:1/base");
    }

    #[test]
    fn parses_file_urls() {
        assert_eq!(
            Mirror::parse("file:///srv/models").unwrap(),
            dir("/srv/models")
        );
        assert_eq!(
            Mirror::parse("file://localhost/srv/my%20models").unwrap(),
            dir("/srv/my models")
        );
        assert_eq!(
            dir("/srv/m").location("whisper-base/tokenizer.json"),
            "/srv/m/whisper-base/tokenizer.json"
        );
    }

    #[test]
    fn rejects_bad_mirrors() {
        for (s, needle) in [
            ("", "empty"),
            ("   ", "empty"),
            ("ftp://host/models", "unsupported scheme `ftp`"),
            ("s3://bucket/x", "unsupported scheme `s3`"),
            ("http:///models", "no host"),
            ("https://h/models?token=1", "query"),
            ("file://otherhost/models", "absolute path"),
            ("file://relative", "absolute path"),
            ("file:///bad%zz", "%-escape"),
        ] {
            let err = Mirror::parse(s).expect_err(s);
            assert!(matches!(err, ModelError::InvalidMirror { .. }), "{s}");
            let msg = err.to_string();
            assert!(msg.contains(needle), "`{msg}` should contain `{needle}`");
        }
    }

    #[test]
    fn from_str_matches_parse() {
        let m: Mirror = "https://x.org/m".parse().unwrap();
        assert_eq!(m, Mirror::Http("https://x.org/m".into()));
    }
}
