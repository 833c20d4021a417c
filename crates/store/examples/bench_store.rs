//! Store benchmark (issue 3): load N GINA accounts in batched transactions,
//! then measure lookup-by-address latency with 2 concurrent readers and 1
//! writer. Prints load rate, peak RSS (VmHWM) and p50/p99 latencies.
//!
//! `cargo run --release -p siegel-store --example bench_store -- \
//!     --url sqlite:///tmp/b/siegel.db --n 1000000 --seconds 20`
//!
//! Run through `bench/store/run.sh`, which does both engines.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use siegel_store::{MasterKey, NewGinaAccount, PreferredMethod, Store};
use siegel_types::Address;

const HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA";

struct Args {
    url: String,
    data_dir: PathBuf,
    n: u64,
    batch: u64,
    seconds: u64,
}

fn args() -> Args {
    let mut a = Args {
        url: String::new(),
        data_dir: std::env::temp_dir().join("siegel-bench-store"),
        n: 1_000_000,
        batch: 10_000,
        seconds: 20,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => a.url = value,
            "--data-dir" => a.data_dir = value.into(),
            "--n" => a.n = value.replace(['_', ','], "").parse().unwrap(),
            "--batch" => a.batch = value.parse().unwrap(),
            "--seconds" => a.seconds = value.parse().unwrap(),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn address(i: u64) -> Address {
    Address::parse(&format!("user{i}@partner{}.example", i % 1000)).unwrap()
}

fn account(i: u64) -> NewGinaAccount {
    NewGinaAccount {
        address: address(i),
        name: Some(format!("External User {i}")),
        password_hash: HASH.into(),
        security_question: None,
        answer_hash: None,
        preferred_method: PreferredMethod::Gina,
        language: if i.is_multiple_of(2) { "de" } else { "en" }.into(),
    }
}

/// `VmHWM` (peak RSS) or `VmRSS` from /proc/self/status, in MiB.
fn proc_status_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let a = args();
    std::fs::create_dir_all(&a.data_dir).unwrap();
    let store = Store::open(&a.url, &a.data_dir, MasterKey::generate().unwrap())
        .await
        .unwrap();
    let engine = store.engine().name();
    let existing = store.gina().count().await.unwrap() as u64;
    println!("engine={engine} existing={existing} target={}", a.n);

    // ---- load
    let started = Instant::now();
    let mut next = existing;
    let mut last_report = Instant::now();
    while next < a.n {
        let end = (next + a.batch).min(a.n);
        let batch: Vec<_> = (next..end).map(account).collect();
        store.gina().insert_batch(&batch).await.unwrap();
        next = end;
        if last_report.elapsed() > Duration::from_secs(10) {
            let secs = started.elapsed().as_secs_f64();
            println!(
                "  loaded {next} ({:.0}/s) rss={:.0}MiB",
                (next - existing) as f64 / secs,
                proc_status_mib("VmRSS:")
            );
            last_report = Instant::now();
        }
    }
    let load_secs = started.elapsed().as_secs_f64();
    let loaded = a.n.saturating_sub(existing);
    let rate = if load_secs > 0.0 {
        loaded as f64 / load_secs
    } else {
        0.0
    };
    println!(
        "load: {loaded} accounts in {load_secs:.1}s = {rate:.0} accounts/s, peak RSS {:.0} MiB",
        proc_status_mib("VmHWM:")
    );

    // ---- lookups: 2 readers, 1 writer
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let n = a.n.max(1);
    let mut readers = Vec::new();
    for r in 0..2u64 {
        let store = store.clone();
        let stop = stop.clone();
        readers.push(tokio::spawn(async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (r + 1));
            let mut lat = Vec::with_capacity(1 << 20);
            while !stop.load(Ordering::Relaxed) {
                let addr = address(rng.next() % n);
                let t = Instant::now();
                let found = store.gina().by_address(&addr).await.unwrap();
                lat.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                assert!(found.is_some());
            }
            lat
        }));
    }
    let writer = {
        let store = store.clone();
        let stop = stop.clone();
        let writes = writes.clone();
        tokio::spawn(async move {
            let mut rng = Rng(0xD1B5_4A32_D192_ED03);
            while !stop.load(Ordering::Relaxed) {
                let addr = address(rng.next() % n);
                store
                    .gina()
                    .record_failed_login(&addr, 1_000_000, 60, 0)
                    .await
                    .unwrap();
                writes.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(a.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    for r in readers {
        lat.extend(r.await.unwrap());
    }
    writer.await.unwrap();
    lat.sort_unstable();
    println!(
        "lookup: {} reads ({:.0}/s) with {} concurrent writes ({:.0}/s): p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        lat.len(),
        lat.len() as f64 / a.seconds as f64,
        writes.load(Ordering::Relaxed),
        writes.load(Ordering::Relaxed) as f64 / a.seconds as f64,
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0),
    );
    println!("peak RSS {:.0} MiB", proc_status_mib("VmHWM:"));
    store.close().await;
}
