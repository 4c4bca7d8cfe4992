//! A real Janus (Debian's `janus` package) for end-to-end tests, inside a network namespace the
//! test creates for itself.
//!
//! libnice never offers loopback candidates and ignores interfaces named `veth*`, and Janus offers
//! only non-loopback addresses: so each test re-executes itself under `unshare -n` (a fresh network
//! namespace: nothing it does is visible outside, nothing outside is reachable), brings `lo` up and
//! creates a veth pair `sfu0`/`sfu1` with 10.200.0.1 on `sfu0`. Janus offers that address
//! (`ice_enforce_list`), and soustitre's and the publishers' webrtcbins are restricted to it.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The address ICE uses inside the namespace.
pub const ICE_ADDRESS: &str = "10.200.0.1";
/// Janus's WebSocket port inside the namespace.
pub const PORT: u16 = 8188;
/// UDP port of the Streaming plugin's RTP mountpoint (`tests/fixtures/whep/janus`).
pub const RTP_PORT: u16 = 5004;
/// The VideoRoom room of `tests/fixtures/janus/janus.plugin.videoroom.jcfg`.
pub const ROOM: u64 = 1234;
const NETNS_ENV: &str = "SOUSTITRE_TEST_NETNS";

/// The Janus WebSocket URL.
pub fn url() -> String {
    format!("ws://127.0.0.1:{PORT}/")
}

/// Runs the calling test inside its own network namespace. Returns `true` in the namespace (the
/// test goes on); in the parent, runs the child and returns `false` once it passed (panics with
/// its output otherwise). `module` is the caller's `module_path!()`, `name` its function's name:
/// together they give the test's name in the harness (`sfu_janus::meeting::a_test`).
pub fn in_netns(module: &str, name: &str) -> bool {
    if std::env::var_os(NETNS_ENV).is_some() {
        setup_network();
        return true;
    }
    let test = match module.split_once("::") {
        Some((_crate, path)) => format!("{path}::{name}"),
        None => name.to_owned(),
    };
    let exe = std::env::current_exe().expect("test executable");
    let status = Command::new("unshare")
        .arg("-n")
        .arg("--")
        .arg(exe)
        .args([&test, "--exact", "--nocapture", "--test-threads=1"])
        .env(NETNS_ENV, "1")
        .status()
        .expect("unshare (util-linux) runs; the tests need root for network namespaces");
    assert!(
        status.success(),
        "{test} failed inside its network namespace: {status}"
    );
    false
}

fn ip(args: &str) {
    let ok = Command::new("ip")
        .args(args.split_whitespace())
        .status()
        .unwrap_or_else(|e| panic!("ip {args}: {e} (iproute2 installed?)"));
    assert!(ok.success(), "ip {args} failed");
}

pub fn setup_network() {
    ip("link set lo up");
    ip("link add sfu0 type veth peer name sfu1");
    ip(&format!("addr add {ICE_ADDRESS}/24 dev sfu0"));
    ip("link set sfu0 up");
    ip("link set sfu1 up");
}

/// A running Janus; killed on drop.
pub struct JanusServer {
    child: Option<Child>,
    conf: PathBuf,
    _dir: tempfile::TempDir,
}

impl JanusServer {
    /// Writes the test configuration and starts Janus; returns once its WebSocket port accepts.
    pub fn start() -> JanusServer {
        Self::start_from(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/janus"))
    }

    /// Same, with the configuration files of `fixtures` (`@RTP_PORT@` becomes [`RTP_PORT`]).
    pub fn start_from(fixtures: &Path) -> JanusServer {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().to_path_buf();
        for entry in std::fs::read_dir(fixtures).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path)
                .unwrap()
                .replace("@CONF@", conf.to_str().unwrap())
                .replace("@IFACE@", "sfu0")
                .replace("@PORT@", &PORT.to_string())
                .replace("@ADDR@", "127.0.0.1")
                .replace("@RTP_PORT@", &RTP_PORT.to_string());
            std::fs::write(conf.join(path.file_name().unwrap()), text).unwrap();
        }
        let mut server = JanusServer {
            child: None,
            conf,
            _dir: dir,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.conf.join("janus.log")).unwrap();
        let child = Command::new("janus")
            .arg("-C")
            .arg(self.conf.join("janus.jcfg"))
            .arg("-F")
            .arg(&self.conf)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("janus is installed (apt-get install janus; make setup does it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", PORT)).is_err() {
            assert!(
                Instant::now() < deadline,
                "Janus did not open its WebSocket port; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50)); // polling a port, not synchronising
        }
    }

    /// Kills Janus (SIGKILL: every session and peer connection is lost at once).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again with the same configuration.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Janus's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.conf.join("janus.log")).unwrap_or_default()
    }
}

impl Drop for JanusServer {
    fn drop(&mut self) {
        self.kill();
    }
}
