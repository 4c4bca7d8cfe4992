//! `fetch_all`: ensure several bundles for the CLI and summarise what was done.

use std::fmt;

use super::ModelError;
use super::store::{BundlePaths, FileStatus, ModelStore};

/// The outcome of one bundle in `fetch_all`.
#[derive(Debug)]
pub struct BundleReport {
    pub bundle: String,
    pub result: Result<BundlePaths, ModelError>,
}

/// What `fetch_all` did, bundle by bundle. `Display` gives one line per bundle plus a total.
#[derive(Debug, Default)]
pub struct FetchSummary {
    pub bundles: Vec<BundleReport>,
}

impl FetchSummary {
    /// True when every bundle is present and verified.
    pub fn is_success(&self) -> bool {
        self.bundles.iter().all(|b| b.result.is_ok())
    }

    /// The failed bundles and their errors.
    pub fn errors(&self) -> impl Iterator<Item = (&str, &ModelError)> {
        self.bundles.iter().filter_map(|b| match &b.result {
            Ok(_) => None,
            Err(e) => Some((b.bundle.as_str(), e)),
        })
    }

    /// Number of files copied from the mirror and their total size. A file shared by two bundles
    /// is copied at most once (the second bundle finds it stamped).
    pub fn copied(&self) -> (usize, u64) {
        self.bundles
            .iter()
            .filter_map(|b| b.result.as_ref().ok())
            .flat_map(|p| p.files())
            .filter(|f| f.status.copied())
            .fold((0, 0), |(n, bytes), f| (n + 1, bytes + f.bytes))
    }
}

impl fmt::Display for FetchSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.bundles {
            match &b.result {
                Ok(paths) => {
                    let count =
                        |s: FileStatus| paths.files().iter().filter(|f| f.status == s).count();
                    let bytes: u64 = paths.files().iter().map(|f| f.bytes).sum();
                    writeln!(
                        f,
                        "{}: ok, {} files, {:.1} MB ({} fetched, {} repaired, {} hashed, {} already verified)",
                        b.bundle,
                        paths.files().len(),
                        bytes as f64 / 1e6,
                        count(FileStatus::Fetched),
                        count(FileStatus::Repaired),
                        count(FileStatus::Verified),
                        count(FileStatus::Stamped),
                    )?;
                }
                Err(e) => writeln!(f, "{}: FAILED: {e}", b.bundle)?,
            }
        }
        let (n, bytes) = self.copied();
        let failed = self.errors().count();
        write!(
            f,
            "{} bundles, {failed} failed; {n} files copied ({:.1} MB)",
            self.bundles.len(),
            bytes as f64 / 1e6
        )
    }
}

/// Ensures each bundle in turn (unknown names and failures are reported, the others still
/// proceed). The CLI passes `store.manifest().bundle_names()` to fetch everything.
pub fn fetch_all(store: &ModelStore, bundles: &[&str]) -> FetchSummary {
    FetchSummary {
        bundles: bundles
            .iter()
            .map(|&bundle| BundleReport {
                bundle: bundle.to_string(),
                result: store.ensure(bundle),
            })
            .collect(),
    }
}
