//! The model manifest (`models/manifest.toml`): every model file with its size and sha256, and the
//! named bundles the code asks for. Parsed and checked once; the store only reads it afterwards.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::Deserialize;

use super::ModelError;

/// The manifest compiled into the binary, so an installed binary works without a checkout.
pub const EMBEDDED_MANIFEST: &str = include_str!("../../models/manifest.toml");

/// The only manifest schema this code understands.
pub const MANIFEST_SCHEMA: u32 = 1;

/// One model file: where it lives (relative to the mirror root and to the model directory), its
/// exact size and sha256, and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Relative path, `/`-separated, e.g. `whisper-base/encoder.int8.onnx`.
    pub path: String,
    /// The model's name in the mirror's manifest (informative).
    #[serde(default)]
    pub name: Option<String>,
    pub bytes: u64,
    /// Lowercase hex.
    pub sha256: String,
    pub license: String,
    pub source: String,
}

impl FileEntry {
    /// The last path component (`encoder.int8.onnx`).
    pub fn file_name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }
}

/// A named group of files loaded together (e.g. `whisper-base`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    #[serde(default)]
    pub description: String,
    /// Paths of `[[file]]` entries.
    pub files: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    schema: u32,
    #[serde(default)]
    file: Vec<FileEntry>,
    #[serde(default)]
    bundle: BTreeMap<String, Bundle>,
}

/// A parsed and checked manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    origin: String,
    files: Vec<FileEntry>,
    bundles: BTreeMap<String, Bundle>,
}

impl Manifest {
    /// The manifest compiled into the binary (`models/manifest.toml` at build time).
    pub fn embedded() -> Result<Manifest, ModelError> {
        Manifest::parse(EMBEDDED_MANIFEST, "embedded models/manifest.toml")
    }

    /// Reads and checks a manifest file.
    pub fn load(path: &Path) -> Result<Manifest, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        Manifest::parse(&text, &path.display().to_string())
    }

    /// Parses and checks manifest text; `origin` names it in error messages.
    pub fn parse(text: &str, origin: &str) -> Result<Manifest, ModelError> {
        let raw: RawManifest = toml::from_str(text)
            .map_err(|e| ModelError::Manifest(format!("{origin}: {}", one_line(&e.to_string()))))?;
        let manifest = Manifest {
            origin: origin.to_string(),
            files: raw.file,
            bundles: raw.bundle,
        };
        if raw.schema != MANIFEST_SCHEMA {
            return Err(manifest.err(format!(
                "schema {} is not supported (expected {MANIFEST_SCHEMA})",
                raw.schema
            )));
        }
        manifest.check()?;
        Ok(manifest)
    }

    /// Where this manifest came from (a path, or "embedded ...").
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// All files, in manifest order.
    pub fn files(&self) -> &[FileEntry] {
        &self.files
    }

    /// The entry for a manifest path.
    pub fn file(&self, path: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.path == path)
    }

    /// Bundle names, sorted.
    pub fn bundle_names(&self) -> impl Iterator<Item = &str> {
        self.bundles.keys().map(String::as_str)
    }

    /// A bundle by name.
    pub fn bundle(&self, name: &str) -> Result<&Bundle, ModelError> {
        self.bundles
            .get(name)
            .ok_or_else(|| ModelError::UnknownBundle {
                bundle: name.to_string(),
                known: self.bundle_names().collect::<Vec<_>>().join(", "),
            })
    }

    /// The file entries of a bundle, in bundle order.
    pub fn bundle_files(&self, name: &str) -> Result<Vec<&FileEntry>, ModelError> {
        let bundle = self.bundle(name)?;
        // `check` guarantees every bundle path has an entry.
        Ok(bundle.files.iter().filter_map(|p| self.file(p)).collect())
    }

    /// Finds a bundle's file by manifest path or by file name (unique within a bundle).
    pub fn bundle_file(&self, bundle: &str, file: &str) -> Result<&FileEntry, ModelError> {
        self.bundle_files(bundle)?
            .into_iter()
            .find(|f| f.path == file || f.file_name() == file)
            .ok_or_else(|| ModelError::UnknownFile {
                bundle: bundle.to_string(),
                file: file.to_string(),
            })
    }

    fn err(&self, msg: String) -> ModelError {
        ModelError::Manifest(format!("{}: {msg}", self.origin))
    }

    fn check(&self) -> Result<(), ModelError> {
        let mut seen = HashSet::new();
        for f in &self.files {
            check_path(&f.path).map_err(|why| self.err(format!("file path `{}` {why}", f.path)))?;
            if !seen.insert(f.path.as_str()) {
                return Err(self.err(format!("file `{}` is listed twice", f.path)));
            }
            if f.bytes == 0 {
                return Err(self.err(format!("file `{}` has bytes = 0", f.path)));
            }
            let hex_ok = f.sha256.len() == 64
                && f.sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !hex_ok {
                return Err(self.err(format!(
                    "file `{}`: sha256 must be 64 lowercase hex digits, got `{}`",
                    f.path, f.sha256
                )));
            }
        }
        for (name, bundle) in &self.bundles {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(self.err(format!("bundle name `{name}` is empty or has spaces")));
            }
            if bundle.files.is_empty() {
                return Err(self.err(format!("bundle `{name}` lists no files")));
            }
            let mut names = HashSet::new();
            for p in &bundle.files {
                let Some(entry) = self.file(p) else {
                    return Err(self.err(format!(
                        "bundle `{name}` lists `{p}`, which has no [[file]] entry"
                    )));
                };
                if !names.insert(entry.file_name()) {
                    return Err(self.err(format!(
                        "bundle `{name}` has two files named `{}`",
                        entry.file_name()
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Manifest paths stay inside the model directory and need no escaping in a URL.
fn check_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("is empty");
    }
    if !path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-+/".contains(&b))
    {
        return Err("may only use A-Z a-z 0-9 . _ - + /");
    }
    if path
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == ".." || c.starts_with('.'))
    {
        return Err("must be relative, without empty, `.`, `..` or hidden components");
    }
    Ok(())
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::bundles;

    fn embedded() -> Manifest {
        Manifest::embedded().expect("embedded manifest parses and is consistent")
    }

    #[test]
    fn embedded_defines_the_bundles_the_code_asks_for() {
        let m = embedded();
        for name in bundles::ALL {
            let files = m.bundle_files(name).unwrap();
            assert!(!files.is_empty(), "{name}");
        }
        let names: Vec<_> = m.bundle_names().collect();
        let mut expected = bundles::ALL.to_vec();
        expected.sort();
        assert_eq!(names, expected);
    }

    #[test]
    fn every_file_is_in_some_bundle_and_bundle_files_are_listed() {
        let m = embedded();
        let mut used = HashSet::new();
        for name in m.bundle_names() {
            for p in &m.bundle(name).unwrap().files {
                assert!(m.file(p).is_some(), "{name}: {p} missing from [[file]]");
                used.insert(p.clone());
            }
        }
        for f in m.files() {
            assert!(used.contains(&f.path), "{} is in no bundle", f.path);
        }
    }

    #[test]
    fn whisper_bundles_have_the_same_shape() {
        let m = embedded();
        for b in [bundles::WHISPER_BASE, bundles::WHISPER_TINY_EN] {
            for name in [
                "encoder.int8.onnx",
                "decoder.int8.onnx",
                "tokenizer.json",
                "whisper_config.json",
                "whisper80_conv.onnx",
            ] {
                let f = m.bundle_file(b, name).unwrap();
                assert!(f.path.ends_with(name));
            }
        }
        assert_eq!(
            m.bundle_file(bundles::WHISPER_BASE, "encoder.int8.onnx")
                .unwrap()
                .path,
            "whisper-base/encoder.int8.onnx"
        );
        assert_eq!(
            m.bundle_file(bundles::SILERO_VAD, "silero_vad.onnx")
                .unwrap()
                .bytes,
            2_327_524
        );
    }

    /// The shared mirror's manifest, when this checkout sits next to it (`<repo>/../shared`).
    fn shared_manifest() -> Option<String> {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/models/MANIFEST.toml");
        std::fs::read_to_string(p).ok()
    }

    #[derive(Deserialize)]
    struct SharedManifest {
        model: Vec<SharedModel>,
    }
    #[derive(Deserialize)]
    struct SharedModel {
        name: String,
        file: String,
        bytes: u64,
        sha256: String,
        license: String,
        source: String,
    }

    #[test]
    fn agrees_with_the_shared_mirror_manifest() {
        let Some(text) = shared_manifest() else {
            eprintln!("../shared/models/MANIFEST.toml not present: comparison skipped");
            return;
        };
        let shared: SharedManifest = toml::from_str(&text).unwrap();
        let m = embedded();
        assert_eq!(shared.model.len(), m.files().len(), "same number of files");
        for s in &shared.model {
            let f = m
                .file(&s.file)
                .unwrap_or_else(|| panic!("{} missing from models/manifest.toml", s.file));
            assert_eq!(f.sha256, s.sha256, "{}", s.file);
            assert_eq!(f.bytes, s.bytes, "{}", s.file);
            assert_eq!(f.license, s.license, "{}", s.file);
            assert_eq!(f.source, s.source, "{}", s.file);
            assert_eq!(f.name.as_deref(), Some(s.name.as_str()), "{}", s.file);
        }
    }

    const OK_FILE: &str = r#"
[[file]]
path = "a/x.onnx"
bytes = 3
sha256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
license = "MIT"
source = "test"
"#;

    fn parse(text: &str) -> Result<Manifest, ModelError> {
        Manifest::parse(text, "test")
    }

    #[test]
    fn rejects_inconsistent_manifests() {
        let cases = [
            (
                format!("schema = 1\n{OK_FILE}\n[bundle.b]\nfiles = [\"a/y.onnx\"]\n"),
                "no [[file]] entry",
            ),
            (format!("schema = 2\n{OK_FILE}"), "schema 2"),
            (format!("schema = 1\n{OK_FILE}{OK_FILE}"), "listed twice"),
            (
                format!("schema = 1\n{}", OK_FILE.replace("a/x.onnx", "../x.onnx")),
                "must be relative",
            ),
            (
                format!("schema = 1\n{}", OK_FILE.replace("a/x.onnx", "/x.onnx")),
                "must be relative",
            ),
            (
                format!("schema = 1\n{}", OK_FILE.replace("a/x.onnx", "a x.onnx")),
                "may only use",
            ),
            (
                format!("schema = 1\n{}", OK_FILE.replace("ba78", "BA78")),
                "lowercase hex",
            ),
            (
                format!("schema = 1\n{}", OK_FILE.replace("bytes = 3", "bytes = 0")),
                "bytes = 0",
            ),
            (
                format!("schema = 1\n{}", OK_FILE.replace("source", "sorce")),
                "unknown field",
            ),
            (
                format!("schema = 1\n{OK_FILE}\n[bundle.b]\nfiles = []\n"),
                "lists no files",
            ),
        ];
        for (text, needle) in cases {
            let err = parse(&text).expect_err(needle).to_string();
            assert!(err.contains(needle), "`{err}` should contain `{needle}`");
            assert!(err.starts_with("model manifest: test"), "{err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn duplicate_file_names_in_a_bundle_are_rejected() {
        let second = OK_FILE.replace("a/x.onnx", "b/x.onnx");
        let text = format!(
            "schema = 1\n{OK_FILE}{second}\n[bundle.b]\nfiles = [\"a/x.onnx\", \"b/x.onnx\"]\n"
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("two files named `x.onnx`"), "{err}");
    }

    #[test]
    fn lookups_by_name_and_path() {
        let text = format!("schema = 1\n{OK_FILE}\n[bundle.b]\nfiles = [\"a/x.onnx\"]\n");
        let m = parse(&text).unwrap();
        assert_eq!(m.bundle_file("b", "x.onnx").unwrap().path, "a/x.onnx");
        assert_eq!(m.bundle_file("b", "a/x.onnx").unwrap().path, "a/x.onnx");
        assert!(matches!(
            m.bundle_file("b", "y.onnx"),
            Err(ModelError::UnknownFile { .. })
        ));
        let err = m.bundle("nope").unwrap_err();
        assert!(matches!(err, ModelError::UnknownBundle { .. }));
        assert_eq!(
            err.to_string(),
            "unknown model bundle `nope` (the manifest defines: b)"
        );
    }
}
