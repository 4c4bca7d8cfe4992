//! `soustitre bench-fanout` at toy size: the same code as the 100 × 100 run, with 2 rooms × 3
//! subscribers for about 2 s, clients in the bench's process and in a child process (the real
//! `soustitre` binary). Checks what the bench is for: every client got every final of its room
//! exactly once and in order (counted against the log, independently of the bench), and the JSON
//! report has its fields. No timing is asserted.

use std::path::{Path, PathBuf};

use serde_json::Value;
use soustitre::bench_fanout::{ClientsMode, DEFAULT_LOG, FanoutArgs, FanoutReport, run};

const ROOMS: usize = 2;
const SUBSCRIBERS: usize = 3;
const SECONDS: f64 = 2.0;

fn log() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_LOG)
}

fn out_json(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fanout-smoke-{name}.json"))
}

fn run_small(clients: ClientsMode, name: &str) -> (FanoutReport, Value) {
    let json = out_json(name);
    let _ = std::fs::remove_file(&json);
    let args = FanoutArgs {
        rooms: ROOMS,
        subscribers: SUBSCRIBERS,
        seconds: SECONDS,
        log: Some(log()),
        json: Some(json.clone()),
        clients,
        clients_exe: Some(PathBuf::from(env!("CARGO_BIN_EXE_soustitre"))),
        drain_timeout_s: 20.0,
        ..FanoutArgs::default()
    };
    let report = run(&args).unwrap_or_else(|e| panic!("bench-fanout ({name}) failed: {e}"));
    let text = std::fs::read_to_string(&json).expect("the JSON report was written");
    let value: Value = serde_json::from_str(&text).expect("the JSON report parses");
    (report, value)
}

fn check(report: &FanoutReport, json: &Value, mode: ClientsMode) {
    let events = soustitre::captions::read_log(log()).expect("the default log reads");
    let finals = events.iter().filter(|e| e.is_final()).count();
    assert!(finals > 0, "the log has finals");
    let connections = ROOMS * SUBSCRIBERS;

    println!("{}", report.table());
    assert_eq!(report.clients_process, mode);
    assert_eq!(
        report.violations, 0,
        "violations: {:?}",
        report.violation_examples
    );
    assert_eq!(report.connections, connections);
    assert_eq!(report.finals_per_room, finals);
    assert_eq!(report.finals_expected, (finals * connections) as u64);
    assert_eq!(
        report.finals_delivered, report.finals_expected,
        "every client gets every final of its room exactly once, in order"
    );
    assert_eq!(report.messages_published, (events.len() * ROOMS) as u64);
    assert_eq!(
        report.messages_expected,
        report.messages_published * SUBSCRIBERS as u64
    );
    assert!(
        report.messages_delivered >= report.finals_delivered
            && report.messages_delivered <= report.messages_expected,
        "delivered {} of {}",
        report.messages_delivered,
        report.messages_expected
    );
    assert_eq!(report.latency_ms.samples, report.messages_delivered);
    assert_eq!(report.final_latency_ms.samples, report.finals_delivered);
    assert!(report.correct());

    // The JSON has the figures the product asks for, with the values of the report.
    for key in [
        "rooms",
        "subscribers_per_room",
        "messages_published",
        "messages_delivered",
        "messages_expected",
        "delivered_ratio",
        "finals_delivered",
        "finals_expected",
        "cpu_s_per_wall_s",
        "cpu_s_per_1000_delivered",
        "service_cpu_s_per_wall_s",
        "service_cpu_s_per_1000_delivered",
        "peak_rss_mb",
        "slow_consumer_closes",
        "violations",
        "target_met",
        "loadavg_before",
    ] {
        assert!(json.get(key).is_some(), "JSON report lacks `{key}`: {json}");
    }
    for group in ["latency_ms", "final_latency_ms", "partial_latency_ms"] {
        for q in ["p50", "p95", "p99", "max"] {
            assert!(
                json[group][q].is_number(),
                "JSON report lacks `{group}.{q}`: {json}"
            );
        }
    }
    assert_eq!(json["rooms"], ROOMS);
    assert_eq!(json["subscribers_per_room"], SUBSCRIBERS);
    assert_eq!(json["finals_delivered"], report.finals_expected);
    assert_eq!(json["messages_delivered"], report.messages_delivered);
    // (floats are not compared exactly: serde_json's default float parsing may differ by an ulp)
    let back: FanoutReport = serde_json::from_value(json.clone()).expect("the JSON is a report");
    assert_eq!(
        (
            back.messages_delivered,
            back.finals_delivered,
            back.violations
        ),
        (
            report.messages_delivered,
            report.finals_delivered,
            report.violations
        )
    );
    assert!((back.latency_ms.p99 - report.latency_ms.p99).abs() < 1e-9);
}

#[test]
fn every_client_gets_every_final_once_in_order_clients_in_process() {
    let (report, json) = run_small(ClientsMode::InProcess, "in-process");
    check(&report, &json, ClientsMode::InProcess);
}

#[test]
fn every_client_gets_every_final_once_in_order_clients_in_a_child_process() {
    let (report, json) = run_small(ClientsMode::Child, "child");
    check(&report, &json, ClientsMode::Child);
    assert!(
        report.clients_peak_rss_mb.is_some(),
        "the client process reports its memory"
    );
}
