//! Memory and load time of the per-track recognizers: builds `N` recognizers of one model (as a
//! room with `N` participants does, one per track), one after another, and prints the process's
//! resident memory after each (heap trimmed first, so that freed load buffers do not count) and
//! the load time. Writes the figures as JSON with `--json PATH`.
//!
//! `cargo run --release --example recognizer_memory -- [--model whisper-base] [--count 6] [--json out.json]`

use std::time::Instant;

use soustitre::engine::Engine;

fn resident_mb() -> f64 {
    // SAFETY: malloc_trim only returns free heap pages to the system.
    unsafe {
        libc::malloc_trim(0);
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() -> anyhow::Result<()> {
    let mut model = "whisper-base".to_string();
    let mut count = 6usize;
    let mut json = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--model" => model = args.next().ok_or_else(|| anyhow::anyhow!("--model NAME"))?,
            "--count" => {
                count = args
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--count N"))?
                    .parse()?
            }
            "--json" => json = Some(args.next().ok_or_else(|| anyhow::anyhow!("--json PATH"))?),
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let engine = Engine::prepare_default(&model)?;
    let base = resident_mb();
    println!("{model}: process before any recognizer {base:.0} MB");
    let mut kept = Vec::new();
    let mut rows = Vec::new();
    let mut before = base;
    for i in 1..=count {
        let t = Instant::now();
        kept.push(engine.whisper()?);
        let load_ms = t.elapsed().as_secs_f64() * 1000.0;
        let now = resident_mb();
        println!(
            "recognizer {i}: load {load_ms:.0} ms, +{:.0} MB, {:.0} MB for {i} (process {now:.0} MB)",
            now - before,
            now - base
        );
        rows.push(serde_json::json!({
            "recognizers": i, "load_ms": load_ms, "added_mb": now - before,
            "total_mb": now - base, "process_mb": now,
        }));
        before = now;
    }
    if let Some(path) = json {
        let doc = serde_json::json!({ "model": model, "base_mb": base, "rows": rows });
        std::fs::write(&path, serde_json::to_string_pretty(&doc)? + "\n")?;
    }
    Ok(())
}
