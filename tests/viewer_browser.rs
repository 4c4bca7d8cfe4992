//! The caption viewer (`web/viewer.*`) in a real headless Chromium, against the real service.
//!
//! Starts `soustitre serve --demo` (room `demo`: the dev corpus meeting's three speaker tracks
//! captioned in real time, in a loop), opens the viewer URL it prints in Chromium driven over
//! the W3C WebDriver protocol (chromedriver as a child process, spoken to with `ureq`), and checks
//! what a participant sees:
//!
//! 1. a final caption with words of the fixture, attributed to its speaker ("Speaker A/B/C");
//! 2. the captions toggle (a real click on `#captions-toggle`) stops new captions: while the
//!    operator API shows the room publishing at least three more finals, no caption with a
//!    higher room seq appears in the page, and the server honoured the toggle (the page counts
//!    the caption messages it still receives while off);
//! 3. toggled on again, new live captions appear.
//!
//! A screenshot goes to `target/viewer-screenshot.png` for humans. Every wait polls the page or
//! the operator API (200 ms) with a deadline; no sleep stands in for synchronisation.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`make setup` installs them; paths can be
//! overridden with `CHROMIUM` and `CHROMEDRIVER`): without them the test fails, it does not skip.
//!
//! Run with `cargo test --release --test viewer_browser`.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Chromium flags: headless, and no traffic to outside hosts (STACK.md, "Browser tests").
const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-proxy-server",
    "--window-size=1280,800",
];
/// W3C WebDriver's key for an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How often every wait looks again.
const POLL: Duration = Duration::from_millis(200);
/// Bound of each wait for something in the page.
const PAGE_WAIT: Duration = Duration::from_secs(60);
/// Bound of the start of the service (models are loaded before it listens).
const SERVICE_START: Duration = Duration::from_secs(180);
/// Finals the room must publish while captions are off before "nothing new appeared" means
/// something: the first of them was published seconds before the check ends.
const FINALS_WHILE_OFF: u64 = 3;

// -------------------------------------------------------------------------------------------------
// Child processes that die with the test, even when it panics

/// Kills its process (and the process group it leads, when it leads one) when dropped.
struct ChildGuard {
    child: Child,
    name: &'static str,
    group: bool,
}

impl ChildGuard {
    fn spawn(cmd: &mut Command, name: &'static str, group: bool) -> ChildGuard {
        use std::os::unix::process::CommandExt as _;
        if group {
            cmd.process_group(0);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        ChildGuard { child, name, group }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.group {
            // chromedriver's browser processes are in its group: end them all
            // SAFETY: kill(2) on a process group this test created; no memory is involved.
            unsafe {
                libc::kill(-(self.child.id() as i32), libc::SIGKILL);
            }
        }
        // InvalidInput: it had already exited
        if let Err(e) = self.child.kill()
            && e.kind() != std::io::ErrorKind::InvalidInput
        {
            eprintln!("cannot kill {}: {e}", self.name);
        }
        let _ = self.child.wait();
    }
}

/// A free loopback port (bound, read and released: chromedriver binds it right after).
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

fn tool(env_var: &str, default: &str, package: &str) -> PathBuf {
    let path = std::env::var_os(env_var).map_or_else(|| PathBuf::from(default), PathBuf::from);
    assert!(
        path.is_file(),
        "{} not found (Debian package `{package}`): run `make setup` (or `bash scripts/setup.sh \
         --system`), which installs chromium and chromium-driver; or point {env_var} at it",
        path.display()
    );
    path
}

// -------------------------------------------------------------------------------------------------
// The service

/// `soustitre serve --demo` and what it printed.
struct Service {
    _child: ChildGuard,
    viewer_url: String,
    admin_url: String,
    stderr: Arc<Mutex<Vec<String>>>,
    _data_dir: tempfile::TempDir,
}

impl Service {
    fn start() -> Service {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_soustitre"));
        cmd.args([
            "serve",
            "--demo",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(data_dir.path())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        for var in [
            "SOUSTITRE_LISTEN",
            "SOUSTITRE_ADMIN_LISTEN",
            "SOUSTITRE_DATA_DIR",
            "SOUSTITRE_CONFIG",
        ] {
            cmd.env_remove(var);
        }
        let mut child = ChildGuard::spawn(&mut cmd, "soustitre serve", false);
        let stdout = child.child.stdout.take().expect("piped stdout");
        let stderr = child.child.stderr.take().expect("piped stderr");
        let stderr_lines = Arc::new(Mutex::new(Vec::new()));
        keep_tail(stderr, stderr_lines.clone());
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            // read to the end so that the service never blocks on a full pipe
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (mut viewer_url, mut admin_url) = (None, None);
        let deadline = Instant::now() + SERVICE_START;
        while viewer_url.is_none() || admin_url.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(u) = line.strip_prefix("viewer: ") {
                        viewer_url = Some(u.trim().to_string());
                    } else if let Some(u) = line.strip_prefix("admin on ") {
                        admin_url = Some(u.trim().trim_end_matches('/').to_string());
                    }
                }
                Err(e) => panic!(
                    "`soustitre serve --demo` did not print its viewer and admin URLs ({e:?} after \
                     {SERVICE_START:?}); its stderr ends with:\n{}",
                    tail(&stderr_lines)
                ),
            }
        }
        let viewer_url = viewer_url.unwrap();
        assert!(
            viewer_url.contains("/viewer/?room=demo&token=") && !viewer_url.contains('<'),
            "the demo prints a viewer URL with a token, got {viewer_url}"
        );
        Service {
            _child: child,
            viewer_url,
            admin_url: admin_url.unwrap(),
            stderr: stderr_lines,
            _data_dir: data_dir,
        }
    }

    /// `GET /rooms/demo` of the operator API.
    fn room(&self, http: &ureq::Agent) -> Value {
        let url = format!("{}/rooms/demo", self.admin_url);
        let v = get_json(http, &url);
        assert!(
            v["finals"].is_u64() && v["last_seq"].is_u64(),
            "{url} answered {v}"
        );
        v
    }

    fn stderr_tail(&self) -> String {
        tail(&self.stderr)
    }
}

fn keep_tail(stream: impl Read + Send + 'static, lines: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let mut l = lines.lock().unwrap();
            l.push(line);
            if l.len() > 40 {
                l.remove(0);
            }
        }
    });
}

fn tail(lines: &Mutex<Vec<String>>) -> String {
    lines.lock().map(|l| l.join("\n")).unwrap_or_default()
}

// -------------------------------------------------------------------------------------------------
// WebDriver

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        // loopback only: never through a proxy from the environment
        .proxy(None)
        .build()
        .into()
}

fn read_body(resp: ureq::http::Response<ureq::Body>, what: &str) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp
        .into_body()
        .into_with_config()
        .limit(64 * 1024 * 1024)
        .read_to_string()
        .unwrap_or_else(|e| panic!("{what}: cannot read the answer: {e}"));
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{what}: the answer is not JSON ({e}): {text}"));
    (status, body)
}

/// POST of a JSON body (ureq is built without its `json` feature).
fn post_json(
    http: &ureq::Agent,
    url: &str,
    body: &Value,
) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
    http.post(url)
        .header("Content-Type", "application/json; charset=utf-8")
        .send(body.to_string())
}

fn get_json(http: &ureq::Agent, url: &str) -> Value {
    let resp = http
        .get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let (status, body) = read_body(resp, url);
    assert_eq!(status, 200, "GET {url}: {body}");
    body
}

/// A chromedriver with one Chromium session; both end when dropped.
struct Browser {
    http: ureq::Agent,
    base: String,
    session: String,
    // dropped after the session is deleted (fields drop in declaration order)
    _driver: ChildGuard,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Browser {
        let chromium = tool("CHROMIUM", CHROMIUM, "chromium");
        let chromedriver = tool("CHROMEDRIVER", CHROMEDRIVER, "chromium-driver");
        let profile = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let log = profile.path().join("chromedriver.log");
        let mut cmd = Command::new(&chromedriver);
        cmd.arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let driver = ChildGuard::spawn(&mut cmd, "chromedriver", true);
        let http = agent();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(resp) = http.get(&format!("{base}/status")).call() {
                let (_, body) = read_body(resp, "chromedriver /status");
                if body["value"]["ready"] == json!(true) {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver (pid {}) did not become ready on port {port}; log: {}",
                driver.pid(),
                log.display()
            );
            std::thread::sleep(POLL);
        }
        let user_data = profile.path().join("profile");
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", user_data.display()));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let resp = post_json(&http, &format!("{base}/session"), &caps).expect("POST /session");
        let (status, body) = read_body(resp, "POST /session");
        assert_eq!(status, 200, "chromedriver could not start Chromium: {body}");
        let session = body["value"]["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_string();
        Browser {
            http,
            base,
            session,
            _driver: driver,
            _profile: profile,
        }
    }

    fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let resp = match (method, body) {
            ("GET", _) => self.http.get(&url).call(),
            ("DELETE", _) => self.http.delete(&url).call(),
            (_, body) => post_json(&self.http, &url, &body.unwrap_or_else(|| json!({}))),
        }
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let (status, body) = read_body(resp, path);
        assert_eq!(status, 200, "WebDriver {method} {path}: {body}");
        body["value"].clone()
    }

    fn open(&self, url: &str) {
        self.command("POST", "/url", Some(json!({ "url": url })));
    }

    /// Runs `script` (a function body) in the page and returns its result.
    fn eval(&self, script: &str) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    fn find(&self, css: &str) -> String {
        let v = self.command(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        v[ELEMENT_KEY]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    /// A real click (WebDriver element click: scrolled into view, hit-tested, mouse events).
    fn click(&self, css: &str) {
        let id = self.find(css);
        self.command("POST", &format!("/element/{id}/click"), None);
    }

    fn screenshot(&self, path: &Path) {
        let b64 = self.command("GET", "/screenshot", None);
        let png = base64_decode(b64.as_str().expect("screenshot is a base64 string"));
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is a PNG");
        std::fs::write(path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // closes Chromium; chromedriver (and anything left in its group) is killed next
        let url = format!("{}/session/{}", self.base, self.session);
        let _ = self.http.delete(&url).call();
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {:?}", c as char),
        }
    };
    let bytes: Vec<u8> = s
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= val(c) << (18 - 6 * i);
        }
        let n = chunk.len() * 6 / 8;
        out.extend_from_slice(&acc.to_be_bytes()[1..1 + n]);
    }
    out
}

// -------------------------------------------------------------------------------------------------
// What the page shows

/// The page's caption lines and controls, read in one script.
const SNAPSHOT: &str = r#"
const q = (s) => document.querySelector(s);
const lines = [...document.querySelectorAll('#captions [data-seq]')].map((e) => ({
  kind: e.dataset.kind, final: e.dataset.final, seq: Number(e.dataset.seq), segment: e.dataset.segment || '',
  track: e.dataset.track, busy: e.getAttribute('aria-busy'), text: e.textContent,
  who: (e.closest('.turn') && e.closest('.turn').querySelector('.who') || {}).textContent || '',
}));
const d = window.soustitreViewer ? window.soustitreViewer.diagnostics() : null;
// The elements seen as partials, kept across snapshots: one that later shows its final is the
// proof that the final replaced the partial in place (same element, still in the page).
const probe = (window.__viewerTestProbe = window.__viewerTestProbe || new Map());
for (const e of document.querySelectorAll('#captions [data-kind="caption"][data-final="false"]')) {
  probe.set(e.dataset.track + '/' + e.dataset.segment, e);
}
const replaced = [...probe.values()].filter((e) => e.isConnected && e.dataset.final === 'true').length;
return {
  partials_seen: probe.size,
  replaced_in_place: replaced,
  lines,
  status: q('#status') ? q('#status').dataset.state : null,
  status_text: q('#status') ? q('#status').textContent : null,
  toggle: q('#captions-toggle') ? q('#captions-toggle').getAttribute('aria-pressed') : null,
  announced: [...document.querySelectorAll('[aria-live="polite"] > *')].map((e) => e.textContent),
  diagnostics: d,
};
"#;

#[derive(Debug)]
struct Line {
    kind: String,
    final_: bool,
    seq: u64,
    track: String,
    segment: String,
    busy: bool,
    text: String,
    who: String,
}

struct Snapshot {
    lines: Vec<Line>,
    status: String,
    toggle: String,
    announced: Vec<String>,
    diagnostics: Value,
    /// Caption elements seen as partials so far, and how many of them now hold their final.
    partials_seen: u64,
    replaced_in_place: u64,
    raw: Value,
}

impl Snapshot {
    fn take(b: &Browser) -> Snapshot {
        let raw = b.eval(SNAPSHOT);
        let lines = raw["lines"]
            .as_array()
            .expect("lines")
            .iter()
            .map(|l| Line {
                kind: l["kind"].as_str().unwrap_or("").to_string(),
                final_: l["final"] == "true",
                seq: l["seq"].as_u64().unwrap_or(0),
                track: l["track"].as_str().unwrap_or("").to_string(),
                segment: l["segment"].as_str().unwrap_or("").to_string(),
                busy: l["busy"] == "true",
                text: l["text"].as_str().unwrap_or("").to_string(),
                who: l["who"].as_str().unwrap_or("").to_string(),
            })
            .collect();
        let s = |k: &str| raw[k].as_str().unwrap_or("").to_string();
        Snapshot {
            lines,
            status: s("status"),
            toggle: s("toggle"),
            announced: raw["announced"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
            diagnostics: raw["diagnostics"].clone(),
            partials_seen: raw["partials_seen"].as_u64().unwrap_or(0),
            replaced_in_place: raw["replaced_in_place"].as_u64().unwrap_or(0),
            raw,
        }
    }

    fn max_seq(&self) -> u64 {
        self.lines.iter().map(|l| l.seq).max().unwrap_or(0)
    }

    fn finals(&self) -> impl Iterator<Item = &Line> {
        self.lines
            .iter()
            .filter(|l| l.kind == "caption" && l.final_)
    }
}

/// Words of six letters or more of the demo tracks' reference transcripts.
fn fixture_words() -> BTreeSet<String> {
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/dev/meetings/en_3spk/tracks");
    let mut words = BTreeSet::new();
    for t in ["A", "B", "C"] {
        let path = dir.join(format!("{t}.txt"));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        words.extend(normalised_words(&text).filter(|w| w.len() >= 6));
    }
    assert!(
        words.contains("budget") && words.contains("morning"),
        "fixture words: {words:?}"
    );
    words
}

fn normalised_words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric() && c != '\'')
        .map(|w| w.trim_matches('\'').to_lowercase())
        .filter(|w| !w.is_empty())
}

/// Polls the page until `done` holds for a snapshot, at most `PAGE_WAIT`.
fn wait_page<T>(
    b: &Browser,
    svc: &Service,
    what: &str,
    mut done: impl FnMut(&Snapshot) -> Option<T>,
) -> T {
    let deadline = Instant::now() + PAGE_WAIT;
    loop {
        let snap = Snapshot::take(b);
        if let Some(v) = done(&snap) {
            return v;
        }
        if Instant::now() >= deadline {
            panic!(
                "{what}: not seen within {PAGE_WAIT:?}.\npage: {}\nservice stderr ends with:\n{}",
                serde_json::to_string_pretty(&snap.raw).unwrap_or_default(),
                svc.stderr_tail()
            );
        }
        std::thread::sleep(POLL);
    }
}

// -------------------------------------------------------------------------------------------------

#[test]
fn viewer_shows_live_captions_and_the_toggle_stops_them() {
    // the browser first: a missing chromium fails before the service spends time loading models
    let browser = Browser::start();
    let svc = Service::start();
    let admin = agent();
    let words = fixture_words();

    browser.open(&svc.viewer_url);

    // 1. A final caption with words of the fixture, attributed to its speaker, and a partial
    //    shown as provisional then replaced in place by its final.
    let first = wait_page(
        &browser,
        &svc,
        "a final caption with words of the fixture, and a partial replaced in place by its final",
        |s| {
            if s.replaced_in_place == 0 {
                return None;
            }
            s.finals()
                .find(|l| normalised_words(&l.text).any(|w| words.contains(&w)))
                .map(|l| (l.seq, l.track.clone(), l.who.clone(), l.text.clone()))
        },
    );
    let (seq, track, who, text) = first;
    eprintln!("first final: seq {seq}, track {track}, {who}: {text}");
    assert!(
        ["A", "B", "C"].contains(&track.as_str()),
        "caption of track {track:?}"
    );
    assert_eq!(
        who,
        format!("Speaker {track}"),
        "the caption is attributed to its speaker's display name"
    );
    let snap = Snapshot::take(&browser);
    assert_eq!(
        snap.status, "connected",
        "status line: {}",
        snap.raw["status_text"]
    );
    assert_eq!(
        snap.toggle, "true",
        "#captions-toggle is pressed while captions are on"
    );
    assert!(
        snap.announced.iter().any(|a| a.contains(&text)),
        "finals are announced in the polite live region: {:?}",
        snap.announced
    );
    assert!(
        snap.lines.iter().all(|l| l.final_ != l.busy),
        "partials (and only they) are aria-busy: {:?}",
        snap.lines
    );
    let mut segments = BTreeSet::new();
    for l in snap.lines.iter().filter(|l| l.kind == "caption") {
        assert!(
            segments.insert((l.track.clone(), l.segment.clone())),
            "one line per segment (a final replaces its partials): {:?}",
            snap.lines
        );
    }
    eprintln!(
        "partials seen: {}, replaced in place by their final: {}",
        snap.partials_seen, snap.replaced_in_place
    );
    let diag = &snap.diagnostics;
    assert_eq!(
        diag["errors"],
        json!([]),
        "the server refused none of the page's messages: {diag}"
    );

    // 2. Captions off: nothing new shows up while the room keeps publishing.
    browser.click("#captions-toggle");
    let off = Snapshot::take(&browser);
    assert_eq!(
        off.toggle, "false",
        "#captions-toggle is not pressed after the click"
    );
    assert_eq!(
        off.status, "captions-off",
        "status line: {}",
        off.raw["status_text"]
    );
    let shown_max = off.max_seq();
    let room_at_click = svc.room(&admin);
    let finals_at_click = room_at_click["finals"].as_u64().unwrap();
    let ignored_at_click = off.diagnostics["received_while_off"]["finals"]
        .as_u64()
        .unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(120);
    let last_seq_before_on = loop {
        let snap = Snapshot::take(&browser);
        let newer: Vec<&Line> = snap.lines.iter().filter(|l| l.seq > shown_max).collect();
        assert!(newer.is_empty(), "captions appeared while off: {newer:?}");
        let room = svc.room(&admin);
        if room["finals"].as_u64().unwrap() >= finals_at_click + FINALS_WHILE_OFF {
            break room["last_seq"].as_u64().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "the room published fewer than {FINALS_WHILE_OFF} finals in 120 s after the click: {room}"
        );
        std::thread::sleep(POLL);
    };
    let snap = Snapshot::take(&browser);
    let newer: Vec<&Line> = snap.lines.iter().filter(|l| l.seq > shown_max).collect();
    assert!(newer.is_empty(), "captions appeared while off: {newer:?}");
    // The server stopped sending too (the page is not merely hiding them): at most a final that
    // was already on its way when the toggle left the page.
    let ignored = snap.diagnostics["received_while_off"]["finals"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        ignored <= ignored_at_click + 1,
        "the server kept sending finals while captions were off: {}",
        snap.diagnostics
    );

    // 3. Captions on again: new live captions appear.
    browser.click("#captions-toggle");
    let on = Snapshot::take(&browser);
    assert_eq!(on.toggle, "true");
    assert_eq!(
        on.status, "connected",
        "status line: {}",
        on.raw["status_text"]
    );
    let (seq, who, text) = wait_page(
        &browser,
        &svc,
        "a new final after turning captions on",
        |s| {
            s.finals()
                .find(|l| l.seq > last_seq_before_on)
                .map(|l| (l.seq, l.who.clone(), l.text.clone()))
        },
    );
    eprintln!("after captions on: seq {seq}, {who}: {text}");
    let snap = Snapshot::take(&browser);
    assert_eq!(
        snap.diagnostics["errors"],
        json!([]),
        "{}",
        snap.diagnostics
    );

    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .to_path_buf();
    let shot = target.join("viewer-screenshot.png");
    browser.screenshot(&shot);
    eprintln!("screenshot: {}", shot.display());
}
