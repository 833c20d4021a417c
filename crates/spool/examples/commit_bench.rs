//! Measures durable commits per second the way the SMTP server makes them:
//! `SESSIONS` concurrent writers, each committing `PER_SESSION` mails of
//! 10 KB. Prints mails/s and how many directory fsyncs the group commit
//! needed. Run: `cargo run --release -p siegel-spool --example commit_bench [DIR]`.

use std::time::Instant;

use siegel_spool::Spool;
use siegel_types::{Address, Direction, Envelope, Origin, QueueId, Recipient, ReversePath};

const SESSIONS: usize = 20;
const PER_SESSION: usize = 100;

fn envelope() -> Result<Envelope, Box<dyn std::error::Error>> {
    Ok(Envelope {
        id: QueueId::generate(),
        mail_from: ReversePath::Address(Address::parse("bench@example.org")?),
        recipients: vec![Recipient::new(Address::parse("sink@example.com")?)],
        direction: Direction::Inbound,
        origin: Origin::Smtp {
            peer: "127.0.0.1:1".into(),
            helo: "bench".into(),
            tls: false,
            auth: None,
        },
        received_at: 0,
        size: 0,
        body_8bit: false,
        smtputf8: false,
        env_id: None,
        ret: None,
        message_id: None,
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "./spool-bench".into());
    let spool = Spool::open(std::path::Path::new(&dir))?;
    let before = spool.dir_fsyncs();
    let body = vec![b'x'; 10 * 1024];
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..SESSIONS {
        let (spool, body, env) = (spool.clone(), body.clone(), envelope()?);
        tasks.push(tokio::spawn(async move {
            for _ in 0..PER_SESSION {
                let mut inc = spool.begin().await?;
                inc.write(&body).await?;
                inc.commit(env.clone()).await?;
            }
            Ok::<_, siegel_spool::SpoolError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    let n = SESSIONS * PER_SESSION;
    println!(
        "{n} durable commits in {secs:.2} s = {:.0} mails/s, {} directory fsyncs",
        n as f64 / secs,
        spool.dir_fsyncs() - before
    );
    for e in spool.list()? {
        spool.remove(&e.envelope.id).await?;
    }
    Ok(())
}
