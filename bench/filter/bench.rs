//! Filter benchmark: N mails of 10 KB through our clamd/spamd clients,
//! beside a naive gateway that calls `clamdscan --stream` and `spamc` once
//! per mail (a process per mail and scanner), against the same private
//! daemons in the same run. Sequential and with several mails in flight.
//!
//! Run via `bench/filter/run.sh` (release build). Not a timed test. Every
//! scan's result is checked (all mails must come back clean/ham), so a
//! broken set-up cannot produce a fast figure.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use siegel_config::ScannerAddress;
use siegel_filter::{Action, Clamd, Filter, Rules, SpamScan, Spamd, Timeouts, VirusScan};
use siegel_types::Direction;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// An ordinary 10 KB mail; `i` makes each one different.
fn mail(i: usize) -> Vec<u8> {
    let mut m = format!(
        "From: Alice Example <alice@example.com>\r\nTo: Bob Example <bob@example.org>\r\n\
         Subject: Quarterly figures, part {i}\r\nDate: Tue, 1 Dec 2026 10:00:00 +0100\r\n\
         Message-ID: <bench.{i}@mail.example.com>\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\nHi Bob,\r\n\r\n"
    )
    .into_bytes();
    let mut n = 0;
    while m.len() < 10 * 1024 - 64 {
        m.extend_from_slice(
            format!(
                "line {n}: the figures for region {} look fine, see the attached notes.\r\n",
                (i + n) % 17
            )
            .as_bytes(),
        );
        n += 1;
    }
    m.extend_from_slice(b"\r\nRegards,\r\nAlice\r\n");
    m
}

/// A daemon started by the e2e harness (`tests/e2e/harness/scanners.py`).
struct Daemon {
    child: Child,
    tcp: ScannerAddress,
    unix: ScannerAddress,
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Daemon {
    fn start(kind: &str, args: &[&str]) -> Result<Daemon, Error> {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/e2e/harness/scanners.py");
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join(kind);
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(kind)
            .arg(&dir)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
        let ready: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| format!("{kind} did not start: {e}"))?;
        let field = |k: &str| ready[k].as_str().unwrap_or_default().to_owned();
        Ok(Daemon {
            child,
            tcp: ScannerAddress::Tcp(field("tcp").trim_start_matches("tcp:").to_owned()),
            unix: ScannerAddress::Unix(field("unix").trim_start_matches("unix:").into()),
            dir,
            _tmp: tmp,
        })
    }

    fn port(&self) -> String {
        match &self.tcp {
            ScannerAddress::Tcp(hp) => hp.rsplit(':').next().unwrap_or_default().to_owned(),
            ScannerAddress::Unix(_) => String::new(),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// Runs `job(i)` for i in 0..n with `parallel` workers; mails per second.
fn threads(
    n: usize,
    parallel: usize,
    job: impl Fn(usize) -> Result<(), Error> + Sync,
) -> Result<f64, Error> {
    let start = Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| -> Result<(), Error> {
        let workers: Vec<_> = (0..parallel)
            .map(|_| {
                s.spawn(|| -> Result<(), Error> {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= n {
                            return Ok(());
                        }
                        job(i)?;
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().map_err(|_| "worker panicked")??;
        }
        Ok(())
    })?;
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// One external client run on one mail; its exit status must be `ok`.
fn run(cmd: &mut Command, input: &[u8], ok: i32) -> Result<(), Error> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    child.stdin.take().ok_or("no stdin")?.write_all(input)?;
    let status = child.wait()?;
    if status.code() != Some(ok) {
        return Err(format!("{cmd:?} exited {status}").into());
    }
    Ok(())
}

/// Our client, `parallel` mails in flight on one tokio runtime.
fn ours<F, Fut>(
    rt: &tokio::runtime::Runtime,
    n: usize,
    parallel: usize,
    mails: &Arc<Vec<Vec<u8>>>,
    scan: F,
) -> Result<f64, Error>
where
    F: Fn(Arc<Vec<Vec<u8>>>, usize) -> Fut + Send + Sync + 'static + Clone,
    Fut: std::future::Future<Output = Result<(), Error>> + Send + 'static,
{
    rt.block_on(async {
        let start = Instant::now();
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..parallel {
            let (next, mails, scan) = (Arc::clone(&next), Arc::clone(mails), scan.clone());
            set.spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        return Ok::<(), Error>(());
                    }
                    scan(Arc::clone(&mails), i % mails.len()).await?;
                }
            });
        }
        while let Some(r) = set.join_next().await {
            r??;
        }
        Ok(n as f64 / start.elapsed().as_secs_f64())
    })
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<(), Error> {
    let n_clam = env("BENCH_MAILS", 1000);
    let n_spam = env("BENCH_SPAM_MAILS", 200);
    let parallel = env("BENCH_PARALLEL", 4);
    let rounds = env("BENCH_ROUNDS", 3).max(1);
    let clamd = Daemon::start("clamd", &[])?;
    let spamd = Daemon::start("spamd", &["--children", &parallel.to_string()])?;
    let mails: Arc<Vec<Vec<u8>>> = Arc::new((0..64).map(mail).collect());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let timeouts = Timeouts::default();
    let clam = Clamd::new(clamd.unix.clone(), timeouts, 50 << 20);
    let spam = Spamd::new(spamd.tcp.clone(), timeouts, 500 << 10);
    let conf = clamd.dir.join("clamd.conf");
    let port = spamd.port();

    println!(
        "# siegel filter benchmark: 10 KB mails, {} CPUs, clamd (tiny test database) + spamd (packaged rules, -L)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<8} {:>8} {:>8} {:>12} {:>12} {:>7}",
        "scanner", "in flight", "mails", "ours mails/s", "naive mails/s", "ratio"
    );
    let line = |what: &str, p: usize, n: usize, a: f64, b: f64| {
        println!(
            "{what:<8} {p:>8} {n:>8} {a:>12.1} {b:>12.1} {:>6.1}x",
            a / b
        );
    };

    for p in [1, parallel] {
        // clamd alone: our INSTREAM vs `clamdscan --stream -` per mail.
        // Cheap enough for interleaved rounds, the best of each kept (the
        // machine is shared; noise only ever slows a round down).
        let (mut a, mut b) = (0f64, 0f64);
        for _ in 0..rounds {
            let c = clam.clone();
            a = a.max(ours(&rt, n_clam, p, &mails, move |m, i| {
                let c = c.clone();
                async move {
                    match c.scan(&m[i][..], m[i].len() as u64).await? {
                        VirusScan::Clean => Ok(()),
                        other => Err(format!("clamd: {other:?}").into()),
                    }
                }
            })?);
            b = b.max(threads(n_clam, p, |i| {
                let m = &mails[i % mails.len()];
                run(
                    Command::new("clamdscan")
                        .args(["--no-summary", "--stream", "--quiet"])
                        .arg(format!("--config-file={}", conf.display()))
                        .arg("-"),
                    m,
                    0,
                )
            })?);
        }
        line("clamd", p, n_clam, a, b);

        // spamd alone: our SYMBOLS vs `spamc -y` per mail.
        let s = spam.clone();
        let a = ours(&rt, n_spam, p, &mails, move |m, i| {
            let s = s.clone();
            async move {
                match s.scan(&m[i][..], m[i].len() as u64).await? {
                    SpamScan::Ham(_) => Ok(()),
                    other => Err(format!("spamd: {other:?}").into()),
                }
            }
        })?;
        let b = threads(n_spam, p, |i| {
            run(
                Command::new("spamc").args(["-d", "127.0.0.1", "-p", &port, "-y"]),
                &mails[i % mails.len()],
                0,
            )
        })?;
        line("spamd", p, n_spam, a, b);

        // Both, as a gateway runs them: our Filter (one read, both daemons
        // at once) vs clamdscan then spamc per mail.
        let rules = Rules::from(&siegel_config::Config::defaults().filter);
        let filter = Arc::new(Filter::new(Some(clam.clone()), Some(spam.clone()), rules));
        let a = ours(&rt, n_spam, p, &mails, move |m, i| {
            let f = Arc::clone(&filter);
            async move {
                let v = f
                    .scan(Direction::Inbound, &m[i][..], m[i].len() as u64)
                    .await?;
                if v.action == Action::Deliver && v.headers.len() == 2 {
                    Ok(())
                } else {
                    Err(format!("filter: {}", v.summary()).into())
                }
            }
        })?;
        let b = threads(n_spam, p, |i| {
            let m = &mails[i % mails.len()];
            run(
                Command::new("clamdscan")
                    .args(["--no-summary", "--stream", "--quiet"])
                    .arg(format!("--config-file={}", conf.display()))
                    .arg("-"),
                m,
                0,
            )?;
            run(
                Command::new("spamc").args(["-d", "127.0.0.1", "-p", &port, "-y"]),
                m,
                0,
            )
        })?;
        line("both", p, n_spam, a, b);
    }
    Ok(())
}
