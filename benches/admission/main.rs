//! `make bench`: every figure of the performance issue in one run, each with its target and
//! PASS/MISS, printed and written to target/bench-results.txt.
//!
//! 1. warm admission vs a bare axum + rustls server (same TLS stack, certificate and accept
//!    loop, fixed answer, parses nothing), open loop at 1,000 and 3,000 req/s (warm.rs);
//! 2. throughput: closed loop at the same concurrency levels for both, the highest rate with
//!    p99 < 10 ms (warm.rs);
//! 3. cold burst, one identity, and 4. 500 pods over 50 identities in 1 s, against a real
//!    OpenBao behind a counting proxy (cold.rs, proxy.rs, backends.rs);
//! 5. memory: RSS idle, after load, with 10,000 and 100,000 tracked managed Secrets, and
//! 6. the refresher at scale (scale.rs).
//!
//! The load generator, the stand-in API, OpenBao and both servers share this machine's cores,
//! so absolute figures include their cost; ratios against the bare server in the same run are
//! the comparable ones. A figure that could not be measured is printed as NOT MEASURED with the
//! reason, never filled in.
//!
//! Arguments (after `--`): `quick` (short durations and 1,000/5,000 Secrets, to check that
//! every scenario runs), `only=warm,cold,scale` (a subset), `instructions` (the warm path
//! in-process, for `valgrind --tool=callgrind`; see instructions.rs).

mod backends;
mod cold;
mod common;
mod instructions;
#[path = "../../tests/support/vault_proxy.rs"]
mod proxy;
mod scale;
mod warm;

use std::time::{Duration, Instant};

use common::Report;

/// Durations and sizes of one run.
pub struct Scale {
    pub open_loop: Duration,
    pub closed_loop: Duration,
    pub concurrency: Vec<usize>,
    pub tracked: usize,
    pub tracked_large: usize,
    pub refresh_interval: Duration,
    pub intervals: u32,
}

impl Scale {
    fn full() -> Scale {
        Scale {
            open_loop: Duration::from_secs(10),
            closed_loop: Duration::from_secs(3),
            concurrency: vec![1, 4, 8, 16, 32, 64],
            tracked: 10_000,
            tracked_large: 100_000,
            refresh_interval: Duration::from_secs(30),
            intervals: 2,
        }
    }

    fn quick() -> Scale {
        Scale {
            open_loop: Duration::from_secs(2),
            closed_loop: Duration::from_secs(1),
            concurrency: vec![1, 8, 32],
            tracked: 1_000,
            tracked_large: 5_000,
            refresh_interval: Duration::from_secs(10),
            intervals: 2,
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if args.iter().any(|a| a == "instructions") {
        instructions::run(&runtime, &args);
        return;
    }
    let quick = args.iter().any(|a| a == "quick") || std::env::var_os("BENCH_QUICK").is_some();
    let only: Vec<String> = args
        .iter()
        .find_map(|a| a.strip_prefix("only="))
        .map(|s| s.split(',').map(String::from).collect())
        .unwrap_or_else(|| vec!["warm".into(), "cold".into(), "scale".into()]);
    let scale = if quick { Scale::quick() } else { Scale::full() };
    let started = Instant::now();
    let mut report = Report::default();
    runtime.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
        report.note(format!(
            "{} run; {cores} cores shared by the load generator, the stand-in API, OpenBao and the servers",
            if quick { "QUICK (reduced durations and sizes)" } else { "full" }
        ));
        let binary = common::webhook_binary();
        let size = std::fs::metadata(&binary).map(|m| m.len()).unwrap_or(0);
        report.note(format!(
            "webhook binary under test: {} ({:.1} MB)",
            binary.display(),
            size as f64 / 1e6
        ));
        if only.iter().any(|s| s == "warm") {
            warm::run(&mut report, &scale).await;
        }
        if only.iter().any(|s| s == "cold") {
            cold::run(&mut report).await;
        }
        if only.iter().any(|s| s == "scale") {
            scale::run(&mut report, &scale).await;
        }
    });
    report.note(format!(
        "bench wall time {:.0} s",
        started.elapsed().as_secs_f64()
    ));
    let table = report.render();
    println!("\n=== secret-injector bench ===\n{table}");
    let out = format!("{}/target/bench-results.txt", env!("CARGO_MANIFEST_DIR"));
    let _ = std::fs::create_dir_all(format!("{}/target", env!("CARGO_MANIFEST_DIR")));
    std::fs::write(&out, &table).unwrap();
    println!("(written to {out})");
}
