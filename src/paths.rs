//! Where the installation, the models, the model mirror and ONNX Runtime are, with no environment
//! variable required. Each lookup takes its variable first when set (an empty value counts as
//! unset), then what a checkout or an installed system provides:
//!
//! | what | variable | then |
//! |---|---|---|
//! | project root | `SOUSTITRE_HOME` | nearest ancestor holding `models/manifest.toml`, from the executable's directory, then from the current directory |
//! | model dir | `SOUSTITRE_MODEL_DIR` | `<root>/models/cache`; without a checkout [`installed_model_dir`] |
//! | mirror | `SOUSTITRE_MODEL_MIRROR` | `<root>/../shared/models` if it is a directory; else none |
//! | ONNX Runtime | `ORT_DYLIB_PATH` | `<root>/.local/lib/libonnxruntime.so`, `/usr/local/lib/soustitre/`, `/usr/lib/soustitre/` |
//!
//! An installed binary (`/usr/local/bin`, Docker) finds no checkout: it uses the manifest compiled
//! into it (`models::Manifest::embedded`) and the model directory of [`installed_model_dir`]:
//! `$XDG_DATA_HOME/soustitre/models` if `XDG_DATA_HOME` is set, else `/var/lib/soustitre/models`
//! if `/var/lib/soustitre` exists (packages and images create it), else
//! `$HOME/.local/share/soustitre/models`, else `/var/lib/soustitre/models`.
//!
//! ```no_run
//! let ort = soustitre::paths::onnxruntime_library()?;
//! # Ok::<_, soustitre::paths::PathsError>(())
//! ```

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::models::{Mirror, ModelError};

/// Overrides the project root.
pub const ENV_HOME: &str = "SOUSTITRE_HOME";
/// Overrides the model directory.
pub const ENV_MODEL_DIR: &str = "SOUSTITRE_MODEL_DIR";
/// The model mirror: a directory, `file://`, `http://` or `https://` URL.
pub const ENV_MODEL_MIRROR: &str = "SOUSTITRE_MODEL_MIRROR";
/// The ONNX Runtime shared library (the variable `ort` itself reads).
pub const ENV_ORT_DYLIB: &str = "ORT_DYLIB_PATH";

/// The file marking a project root.
pub const ROOT_MARKER: &str = "models/manifest.toml";
/// Model directory inside a checkout.
pub const CHECKOUT_MODEL_DIR: &str = "models/cache";
/// Mirror next to a checkout (`<root>/../shared/models`).
pub const SIBLING_MIRROR: &str = "shared/models";
/// System data directory of an installed service.
pub const SYSTEM_DATA_DIR: &str = "/var/lib/soustitre";
/// ONNX Runtime inside a checkout.
pub const CHECKOUT_ORT: &str = ".local/lib/libonnxruntime.so";
/// ONNX Runtime of an installed system, in search order.
pub const SYSTEM_ORT: [&str; 2] = [
    "/usr/local/lib/soustitre/libonnxruntime.so",
    "/usr/lib/soustitre/libonnxruntime.so",
];

#[derive(Debug, thiserror::Error)]
pub enum PathsError {
    #[error(
        "ONNX Runtime library not found (looked at {}); set ORT_DYLIB_PATH to libonnxruntime.so",
        .searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    OnnxRuntimeNotFound { searched: Vec<PathBuf> },

    #[error("{var}={value}: {reason}")]
    InvalidEnv {
        var: &'static str,
        value: String,
        reason: String,
    },
}

/// The project root: `SOUSTITRE_HOME`, else the nearest ancestor of the executable's directory,
/// then of the current directory, that holds `models/manifest.toml`. `None` for an installed
/// binary outside any checkout.
pub fn project_root() -> Option<PathBuf> {
    Lookup::from_process().project_root()
}

/// The model directory: `SOUSTITRE_MODEL_DIR`, else `<root>/models/cache`, else
/// [`installed_model_dir`].
pub fn default_model_dir() -> PathBuf {
    Lookup::from_process().model_dir()
}

/// The mirror: `SOUSTITRE_MODEL_MIRROR` (parsed), else `<root>/../shared/models` when it is a
/// directory, else `None` (the store then reports `NoMirror`, telling the operator to set it).
pub fn default_mirror() -> Result<Option<Mirror>, PathsError> {
    Lookup::from_process().mirror()
}

/// The ONNX Runtime shared library: `ORT_DYLIB_PATH` (must exist), else the first existing of
/// `<root>/.local/lib/libonnxruntime.so` and [`SYSTEM_ORT`]; else an error listing them.
pub fn onnxruntime_library() -> Result<PathBuf, PathsError> {
    Lookup::from_process().onnxruntime()
}

/// The model directory of an installation without checkout (see the module docs).
pub fn installed_model_dir() -> PathBuf {
    Lookup::from_process().installed_model_dir()
}

/// The lookups, over an injectable environment so that tests need not mutate the process's.
struct Lookup<F> {
    var: F,
    exe_dir: Option<PathBuf>,
    cwd: Option<PathBuf>,
    system_data_dir: PathBuf,
    system_ort: Vec<PathBuf>,
}

impl Lookup<fn(&str) -> Option<OsString>> {
    fn from_process() -> Self {
        Lookup {
            var: |name| std::env::var_os(name),
            exe_dir: std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf)),
            cwd: std::env::current_dir().ok(),
            system_data_dir: PathBuf::from(SYSTEM_DATA_DIR),
            system_ort: SYSTEM_ORT.iter().map(PathBuf::from).collect(),
        }
    }
}

impl<F: Fn(&str) -> Option<OsString>> Lookup<F> {
    /// A set, non-empty variable.
    fn var(&self, name: &str) -> Option<OsString> {
        (self.var)(name).filter(|v| !v.is_empty())
    }

    /// Relative paths from variables are taken from the current directory.
    fn absolute(&self, p: PathBuf) -> PathBuf {
        match (&self.cwd, p.is_relative()) {
            (Some(cwd), true) => cwd.join(p),
            _ => p,
        }
    }

    fn project_root(&self) -> Option<PathBuf> {
        if let Some(home) = self.var(ENV_HOME) {
            return Some(self.absolute(PathBuf::from(home)));
        }
        [&self.exe_dir, &self.cwd]
            .into_iter()
            .flatten()
            .flat_map(|start| start.ancestors())
            .find(|dir| dir.join(ROOT_MARKER).is_file())
            .map(Path::to_path_buf)
    }

    fn model_dir(&self) -> PathBuf {
        if let Some(dir) = self.var(ENV_MODEL_DIR) {
            return self.absolute(PathBuf::from(dir));
        }
        match self.project_root() {
            Some(root) => root.join(CHECKOUT_MODEL_DIR),
            None => self.installed_model_dir(),
        }
    }

    fn installed_model_dir(&self) -> PathBuf {
        let rel = Path::new("soustitre/models");
        if let Some(xdg) = self.var("XDG_DATA_HOME").map(PathBuf::from)
            && xdg.is_absolute()
        {
            return xdg.join(rel);
        }
        if self.system_data_dir.is_dir() {
            return self.system_data_dir.join("models");
        }
        if let Some(home) = self.var("HOME").map(PathBuf::from)
            && home.is_absolute()
        {
            return home.join(".local/share").join(rel);
        }
        self.system_data_dir.join("models")
    }

    fn mirror(&self) -> Result<Option<Mirror>, PathsError> {
        if let Some(value) = self.var(ENV_MODEL_MIRROR) {
            let value = value.to_string_lossy().into_owned();
            return match Mirror::parse(&value) {
                Ok(Mirror::Dir(d)) => Ok(Some(Mirror::Dir(self.absolute(d)))),
                Ok(m) => Ok(Some(m)),
                Err(ModelError::InvalidMirror { reason, .. }) => Err(PathsError::InvalidEnv {
                    var: ENV_MODEL_MIRROR,
                    value,
                    reason,
                }),
                Err(other) => Err(PathsError::InvalidEnv {
                    var: ENV_MODEL_MIRROR,
                    value,
                    reason: other.to_string(),
                }),
            };
        }
        Ok(self
            .project_root()
            .and_then(|root| root.parent().map(|p| p.join(SIBLING_MIRROR)))
            .filter(|d| d.is_dir())
            .map(Mirror::Dir))
    }

    fn onnxruntime(&self) -> Result<PathBuf, PathsError> {
        if let Some(value) = self.var(ENV_ORT_DYLIB) {
            let path = self.absolute(PathBuf::from(&value));
            if path.is_file() {
                return Ok(path);
            }
            return Err(PathsError::InvalidEnv {
                var: ENV_ORT_DYLIB,
                value: value.to_string_lossy().into_owned(),
                reason: "no such file".into(),
            });
        }
        let searched: Vec<PathBuf> = self
            .project_root()
            .map(|root| root.join(CHECKOUT_ORT))
            .into_iter()
            .chain(self.system_ort.iter().cloned())
            .collect();
        searched
            .iter()
            .find(|p| p.is_file())
            .cloned()
            .ok_or(PathsError::OnnxRuntimeNotFound { searched })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::fs;

    type Vars = HashMap<&'static str, String>;

    /// A lookup over `vars`, an executable in `exe_dir`, run from `cwd`, with system paths under
    /// `sys` (so nothing outside the temp dirs is consulted).
    fn lookup(
        vars: Vars,
        exe_dir: Option<&Path>,
        cwd: Option<&Path>,
        sys: &Path,
    ) -> Lookup<impl Fn(&str) -> Option<OsString> + use<>> {
        Lookup {
            var: move |name: &str| vars.get(name).map(OsString::from),
            exe_dir: exe_dir.map(Path::to_path_buf),
            cwd: cwd.map(Path::to_path_buf),
            system_data_dir: sys.join("var/lib/soustitre"),
            system_ort: vec![sys.join("usr/local/lib/soustitre/libonnxruntime.so")],
        }
    }

    /// `<tmp>/work/main` with a manifest, `<tmp>/work/shared/models`, and `<tmp>/elsewhere`.
    fn layout() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("work/main");
        fs::create_dir_all(root.join("models")).unwrap();
        fs::write(root.join(ROOT_MARKER), "schema = 1\n").unwrap();
        fs::create_dir_all(root.join("target/debug/deps")).unwrap();
        fs::create_dir_all(tmp.path().join("work/shared/models")).unwrap();
        let elsewhere = tmp.path().join("elsewhere");
        fs::create_dir_all(&elsewhere).unwrap();
        (tmp, root, elsewhere)
    }

    #[test]
    fn root_is_found_from_the_executable_then_the_current_dir() {
        let (tmp, root, elsewhere) = layout();
        let exe = root.join("target/debug/deps");
        let l = lookup(Vars::new(), Some(&exe), Some(&elsewhere), tmp.path());
        assert_eq!(l.project_root(), Some(root.clone()));

        let l = lookup(
            Vars::new(),
            Some(&elsewhere),
            Some(&root.join("models")),
            tmp.path(),
        );
        assert_eq!(l.project_root(), Some(root.clone()), "from the current dir");

        let l = lookup(Vars::new(), Some(&elsewhere), Some(&elsewhere), tmp.path());
        assert_eq!(l.project_root(), None);

        let vars = Vars::from([(ENV_HOME, "rel/home".to_string())]);
        let l = lookup(vars, Some(&exe), Some(&elsewhere), tmp.path());
        assert_eq!(
            l.project_root(),
            Some(elsewhere.join("rel/home")),
            "variable wins"
        );

        let vars = Vars::from([(ENV_HOME, String::new())]);
        let l = lookup(vars, Some(&exe), None, tmp.path());
        assert_eq!(l.project_root(), Some(root), "empty = unset");
    }

    #[test]
    fn model_dir_in_a_checkout_and_installed() {
        let (tmp, root, elsewhere) = layout();
        let exe = root.join("target/debug");
        let l = lookup(Vars::new(), Some(&exe), None, tmp.path());
        assert_eq!(l.model_dir(), root.join("models/cache"));

        let vars = Vars::from([(ENV_MODEL_DIR, "/srv/m".to_string())]);
        assert_eq!(
            lookup(vars, Some(&exe), None, tmp.path()).model_dir(),
            Path::new("/srv/m")
        );

        // Installed: XDG_DATA_HOME, then the system dir if it exists, then HOME.
        let vars = Vars::from([
            ("XDG_DATA_HOME", "/xdg".to_string()),
            ("HOME", "/home/u".to_string()),
        ]);
        let l = lookup(vars.clone(), Some(&elsewhere), None, tmp.path());
        assert_eq!(l.model_dir(), Path::new("/xdg/soustitre/models"));
        let mut no_xdg = vars.clone();
        no_xdg.remove("XDG_DATA_HOME");
        let l = lookup(no_xdg.clone(), Some(&elsewhere), None, tmp.path());
        assert_eq!(
            l.model_dir(),
            Path::new("/home/u/.local/share/soustitre/models")
        );
        fs::create_dir_all(tmp.path().join("var/lib/soustitre")).unwrap();
        let l = lookup(no_xdg, Some(&elsewhere), None, tmp.path());
        assert_eq!(l.model_dir(), tmp.path().join("var/lib/soustitre/models"));
        let l = lookup(Vars::new(), None, None, tmp.path());
        assert_eq!(l.model_dir(), tmp.path().join("var/lib/soustitre/models"));
    }

    #[test]
    fn mirror_from_variable_or_sibling_shared_dir() {
        let (tmp, root, elsewhere) = layout();
        let l = lookup(Vars::new(), Some(&root), None, tmp.path());
        assert_eq!(
            l.mirror().unwrap(),
            Some(Mirror::Dir(tmp.path().join("work/shared/models")))
        );

        fs::remove_dir(tmp.path().join("work/shared/models")).unwrap();
        let l = lookup(Vars::new(), Some(&root), None, tmp.path());
        assert_eq!(l.mirror().unwrap(), None);

        let vars = Vars::from([(ENV_MODEL_MIRROR, "https://m.example/x/".to_string())]);
        let l = lookup(vars, Some(&root), None, tmp.path());
        assert_eq!(
            l.mirror().unwrap(),
            Some(Mirror::Http("https://m.example/x".into()))
        );

        let vars = Vars::from([(ENV_MODEL_MIRROR, "mirror".to_string())]);
        let l = lookup(vars, None, Some(&elsewhere), tmp.path());
        assert_eq!(
            l.mirror().unwrap(),
            Some(Mirror::Dir(elsewhere.join("mirror")))
        );

        let vars = Vars::from([(ENV_MODEL_MIRROR, "ftp://x".to_string())]);
        let err = lookup(vars, None, None, tmp.path()).mirror().unwrap_err();
        assert!(
            err.to_string()
                .starts_with("SOUSTITRE_MODEL_MIRROR=ftp://x: unsupported"),
            "{err}"
        );
    }

    #[test]
    fn onnxruntime_search_order_and_error() {
        let (tmp, root, _) = layout();
        let l = lookup(Vars::new(), Some(&root), None, tmp.path());
        let err = l.onnxruntime().unwrap_err();
        let PathsError::OnnxRuntimeNotFound { searched } = &err else {
            panic!("{err}")
        };
        assert_eq!(searched.len(), 2);
        assert!(
            err.to_string().contains(".local/lib/libonnxruntime.so"),
            "{err}"
        );
        assert!(err.to_string().contains("ORT_DYLIB_PATH"), "{err}");

        let system = tmp.path().join("usr/local/lib/soustitre/libonnxruntime.so");
        fs::create_dir_all(system.parent().unwrap()).unwrap();
        fs::write(&system, b"").unwrap();
        assert_eq!(l.onnxruntime().unwrap(), system);

        let local = root.join(CHECKOUT_ORT);
        fs::create_dir_all(local.parent().unwrap()).unwrap();
        fs::write(&local, b"").unwrap();
        assert_eq!(
            l.onnxruntime().unwrap(),
            local,
            "the checkout's library first"
        );

        let vars = Vars::from([(ENV_ORT_DYLIB, system.display().to_string())]);
        let l = lookup(vars, Some(&root), None, tmp.path());
        assert_eq!(l.onnxruntime().unwrap(), system, "variable wins");

        let vars = Vars::from([(ENV_ORT_DYLIB, "/nonexistent/libonnxruntime.so".to_string())]);
        let err = lookup(vars, Some(&root), None, tmp.path())
            .onnxruntime()
            .unwrap_err();
        assert!(
            matches!(
                err,
                PathsError::InvalidEnv {
                    var: ENV_ORT_DYLIB,
                    ..
                }
            ),
            "{err}"
        );
    }
}
