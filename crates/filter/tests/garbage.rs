//! Daemons that misbehave: nonsense, silence, endless talk, slammed doors.
//! Each must end in a typed error within the configured time — never a
//! panic, a hang, or a "clean".

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use siegel_config::ScannerAddress;
use siegel_filter::{Clamd, ScanError, Spamd, Step, Timeouts};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Copy)]
enum Peer {
    /// Reads a little, answers these octets, closes.
    Says(&'static [u8]),
    /// Reads everything, answers these octets, keeps the connection open.
    SaysAndStays(&'static [u8]),
    /// Accepts and never reads or writes.
    Silent,
    /// Reads everything forever, never answers.
    Listens,
    /// Closes at once.
    Slams,
    /// Writes without end.
    Babbles,
}

async fn serve(peer: Peer, mut s: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    match peer {
        Peer::Says(answer) => {
            let _ = tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await;
            let _ = s.write_all(answer).await;
        }
        Peer::SaysAndStays(answer) => {
            let _ = tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await;
            let _ = s.write_all(answer).await;
            loop {
                if matches!(s.read(&mut buf).await, Ok(0) | Err(_)) {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
            }
        }
        Peer::Silent => tokio::time::sleep(Duration::from_secs(3600)).await,
        Peer::Listens => loop {
            if matches!(s.read(&mut buf).await, Ok(0) | Err(_)) {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
        },
        Peer::Slams => drop(s),
        Peer::Babbles => {
            let noise = vec![b'Z'; 64 * 1024];
            while s.write_all(&noise).await.is_ok() {}
        }
    }
}

async fn fake(peer: Peer) -> ScannerAddress {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(serve(peer, s));
        }
    });
    ScannerAddress::Tcp(addr.to_string())
}

const QUICK: Timeouts = Timeouts {
    connect: Duration::from_secs(1),
    scan: Duration::from_millis(800),
};

fn mail(len: usize) -> Vec<u8> {
    let mut m = b"Subject: hello\r\n\r\n".to_vec();
    m.resize(len, b'x');
    m
}

/// Runs both clients against the peer and returns their errors, checking
/// that each came within a bounded time.
async fn both(peer: Peer, len: usize) -> (ScanError, ScanError) {
    let address = fake(peer).await;
    let m = mail(len);
    let clamd = Clamd::new(address.clone(), QUICK, 1 << 30);
    let spamd = Spamd::new(address, QUICK, 1 << 30);
    let started = Instant::now();
    let c = clamd.scan(&m[..], m.len() as u64).await;
    let s = spamd.scan(&m[..], m.len() as u64).await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    match (c, s) {
        (Err(c), Err(s)) => (c, s),
        other => panic!("a misbehaving daemon gave a result: {other:?}"),
    }
}

#[tokio::test]
async fn nonsense_is_a_protocol_violation() {
    for answer in [
        &b"HTTP/1.1 400 Bad Request\r\n\r\n"[..],
        b"\xff\xfe\x00garbage",
        b"stream: FOUND\0",
        b"SPAMD/1.1 0 EX_OK\r\nSpam: perhaps ; 1 / 5\r\n\r\n",
    ] {
        let (c, s) = both(Peer::Says(answer), 1000).await;
        assert!(
            matches!(c, ScanError::Protocol { .. }),
            "clamd on {answer:?}: {c}"
        );
        assert!(
            matches!(s, ScanError::Protocol { .. }),
            "spamd on {answer:?}: {s}"
        );
    }
}

#[tokio::test]
async fn a_daemon_that_never_answers_times_out() {
    let (c, s) = both(Peer::Listens, 1000).await;
    assert!(
        matches!(
            c,
            ScanError::Timeout {
                step: Step::Reading,
                ..
            }
        ),
        "{c}"
    );
    assert!(
        matches!(
            s,
            ScanError::Timeout {
                step: Step::Reading,
                ..
            }
        ),
        "{s}"
    );
}

#[tokio::test]
async fn a_daemon_that_never_reads_times_out_while_we_send() {
    // Large enough to fill both sockets' buffers.
    let (c, s) = both(Peer::Silent, 16 << 20).await;
    assert!(
        matches!(
            c,
            ScanError::Timeout {
                step: Step::Sending,
                ..
            }
        ),
        "{c}"
    );
    assert!(
        matches!(
            s,
            ScanError::Timeout {
                step: Step::Sending,
                ..
            }
        ),
        "{s}"
    );
}

#[tokio::test]
async fn a_slammed_door_is_an_io_error() {
    let (c, s) = both(Peer::Slams, 1000).await;
    assert!(matches!(c, ScanError::Io { .. }), "{c}");
    assert!(matches!(s, ScanError::Io { .. }), "{s}");
}

#[tokio::test]
async fn endless_talk_is_cut_off() {
    let (c, s) = both(Peer::Babbles, 1000).await;
    assert!(matches!(c, ScanError::Protocol { .. }), "{c}");
    assert!(matches!(s, ScanError::Protocol { .. }), "{s}");
}

#[tokio::test]
async fn an_answer_that_never_ends_times_out() {
    // clamd's answer without its NUL, spamd's without the body it announced.
    let (c, _) = both(Peer::SaysAndStays(b"stream: OK"), 1000).await;
    assert!(
        matches!(
            c,
            ScanError::Timeout {
                step: Step::Reading,
                ..
            }
        ),
        "{c}"
    );
    let (_, s) = both(
        Peer::SaysAndStays(
            b"SPAMD/1.1 0 EX_OK\r\nContent-length: 50\r\nSpam: False ; 0.0 / 5.0\r\n\r\nGTU",
        ),
        1000,
    )
    .await;
    assert!(
        matches!(
            s,
            ScanError::Timeout {
                step: Step::Reading,
                ..
            }
        ),
        "{s}"
    );
}

#[tokio::test]
async fn the_daemons_own_errors_are_typed() {
    let (c, _) = both(Peer::Says(b"stream: Can't allocate memory ERROR\0"), 1000).await;
    match c {
        ScanError::Daemon { message, .. } => assert_eq!(message, "stream: Can't allocate memory"),
        other => panic!("{other}"),
    }
    let (_, s) = both(
        Peer::Says(b"SPAMD/1.0 76 Bad header line: (oops)\r\n"),
        1000,
    )
    .await;
    match s {
        ScanError::Daemon { message, .. } => assert_eq!(message, "76 Bad header line: (oops)"),
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn ping_of_a_wrong_daemon_fails_typed_and_bounded() {
    for peer in [
        Peer::Says(b"+OK POP3 ready\r\n"),
        Peer::Listens,
        Peer::Slams,
    ] {
        let address = fake(peer).await;
        let started = Instant::now();
        assert!(Clamd::new(address.clone(), QUICK, 1).ping().await.is_err());
        assert!(
            Clamd::new(address.clone(), QUICK, 1)
                .version()
                .await
                .is_err()
        );
        assert!(Spamd::new(address, QUICK, 1).ping().await.is_err());
        assert!(started.elapsed() < Duration::from_secs(4));
    }
}
