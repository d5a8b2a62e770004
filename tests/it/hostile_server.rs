//! A hostile or broken server: the client bounds body size and time, never follows a redirect
//! (with credentials) to another host, and records a clear `failed` row.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use reactbatch::outputs::report::{read_report, RowResult, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the fake server answers each request.
#[derive(Clone, Copy)]
enum Behaviour {
    /// 400 with a 200 MB body, streamed.
    Huge,
    /// Headers, then one byte every 200 ms, forever.
    Drip,
    /// 404 with a truncated JSON body.
    MalformedJson,
    /// 403 as an HTML page.
    HtmlError,
    /// 302 to another loopback host that records whether anything reached it.
    Redirect(u16),
    /// `HTTP/1.0 200` and the connection closed after the body.
    Http10Close,
}

async fn read_request(sock: &mut TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return true;
            }
        }
    }
}

/// Serves `behaviour` on every connection, counting requests in `hits` and the bytes of huge
/// bodies that the client took in `body_sent`.
async fn serve(
    listener: TcpListener,
    behaviour: Behaviour,
    hits: Arc<AtomicUsize>,
    body_sent: Arc<AtomicUsize>,
) {
    while let Ok((mut sock, _)) = listener.accept().await {
        let hits = Arc::clone(&hits);
        let body_sent = Arc::clone(&body_sent);
        tokio::spawn(async move {
            while read_request(&mut sock).await {
                hits.fetch_add(1, Ordering::Relaxed);
                let done = answer(&mut sock, behaviour, &body_sent).await;
                if done.is_err() {
                    return;
                }
            }
        });
    }
}

async fn answer(
    sock: &mut TcpStream,
    behaviour: Behaviour,
    body_sent: &AtomicUsize,
) -> std::io::Result<()> {
    match behaviour {
        Behaviour::Huge => {
            let size = 200 * 1024 * 1024;
            sock.write_all(format!("HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {size}\r\n\r\n").as_bytes())
                .await?;
            let block = vec![b'x'; 64 * 1024];
            for _ in 0..size / block.len() {
                sock.write_all(&block).await?;
                body_sent.fetch_add(block.len(), Ordering::Relaxed);
            }
            Ok(())
        }
        Behaviour::Drip => {
            sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n").await?;
            loop {
                sock.write_all(b" ").await?;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Behaviour::MalformedJson => {
            let body = r#"{"code": "MESSAGE_NOT_F"#;
            sock.write_all(format!("HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len()).as_bytes())
                .await
        }
        Behaviour::HtmlError => {
            let body = "<html>\n<h1>Forbidden</h1>\n</html>";
            sock.write_all(format!("HTTP/1.1 403 Forbidden\r\ncontent-type: text/html\r\ncontent-length: {}\r\n\r\n{body}", body.len()).as_bytes())
                .await
        }
        Behaviour::Redirect(port) => {
            sock.write_all(format!("HTTP/1.1 302 Found\r\nlocation: http://127.0.0.2:{port}/steal\r\ncontent-length: 0\r\n\r\n").as_bytes())
                .await
        }
        Behaviour::Http10Close => {
            let body = r#"{"success":true,"message":"Reacao processada"}"#;
            sock.write_all(format!("HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n{body}").as_bytes()).await?;
            sock.shutdown().await?;
            Err(std::io::Error::other("closed"))
        }
    }
}

/// What a run against a fake server gave: the report, requests the server answered, bytes of
/// huge bodies it got out to the client.
struct Ran {
    report: Vec<RowResult>,
    hits: usize,
    body_sent: usize,
}

/// A hang (a timeout that never fires) is forever; a run here takes seconds.
const WATCHDOG: Duration = Duration::from_secs(120);

/// Runs a 3-row Ogmma plan against a fake server, failing if it has not ended after
/// [`WATCHDOG`].
async fn run_against(behaviour: Behaviour, extra: &[&str]) -> Ran {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let hits = Arc::new(AtomicUsize::new(0));
    let body_sent = Arc::new(AtomicUsize::new(0));
    let server = tokio::spawn(serve(
        listener,
        behaviour,
        Arc::clone(&hits),
        Arc::clone(&body_sent),
    ));
    let dir = tempfile::tempdir().expect("tempdir");
    let rows: Vec<PlanRow> = (0..3).map(|i| react("o", format!("h-{i}"), "👍")).collect();
    let plan = write_plan(
        dir.path(),
        &url,
        &rows,
        "rate: unlimited, retries: 1, timeout: 1s",
    );
    let report = dir.path().join("report.csv");
    let mut cmd = run_cmd(&plan, &report, extra);
    let out = tokio::task::spawn_blocking(move || output_within(&mut cmd, WATCHDOG))
        .await
        .expect("join");
    server.abort();
    assert!(!stderr(&out).contains(OGMMA_KEY));
    Ran {
        report: read_report(&report).expect("report"),
        hits: hits.load(Ordering::Relaxed),
        body_sent: body_sent.load(Ordering::Relaxed),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_body_is_not_read_whole() {
    let Ran {
        report, body_sent, ..
    } = run_against(Behaviour::Huge, &[]).await;
    assert_eq!(report.len(), 3);
    for r in &report {
        assert_eq!(
            (r.status, r.http_status, r.attempts),
            (Status::Failed, Some(400), 1),
            "{r:?}"
        );
        assert!(
            r.message.len() <= 400,
            "message of {} bytes",
            r.message.len()
        );
    }
    // Bounded work, counted on the server: the client stopped taking the 3 × 200 MB of bodies
    // after its cap, leaving what the sockets' buffers hold (a few MB each) unread.
    assert!(
        body_sent < 3 * 32 * 1024 * 1024,
        "the client took {body_sent} bytes of body"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drip_fed_answer_times_out_and_is_retried_then_failed() {
    // Were `timeout` per read rather than per attempt, the drip would hold the run forever
    // (the watchdog in `run_against`); the report shows it fired for every attempt.
    let Ran { report, hits, .. } = run_against(Behaviour::Drip, &[]).await;
    for r in &report {
        assert_eq!(
            (r.status, r.code.as_str(), r.attempts),
            (Status::Failed, "timeout", 2),
            "{r:?}"
        );
    }
    assert_eq!(hits, 6, "3 rows × (1 + 1 retry)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_and_html_errors_become_clear_failed_rows() {
    let Ran { report, .. } = run_against(Behaviour::MalformedJson, &[]).await;
    for r in &report {
        assert_eq!(
            (r.status, r.http_status, r.code.as_str()),
            (Status::Failed, Some(404), "http_404"),
            "{r:?}"
        );
        assert!(r.message.contains("MESSAGE_NOT_F"), "{r:?}");
    }
    let Ran { report, .. } = run_against(Behaviour::HtmlError, &[]).await;
    for r in &report {
        assert_eq!(
            (r.status, r.http_status, r.code.as_str()),
            (Status::Failed, Some(403), "http_403"),
            "{r:?}"
        );
        assert!(
            !r.message.contains('\n') && r.message.contains("Forbidden"),
            "{r:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_not_followed_to_another_host() {
    let elsewhere = TcpListener::bind("127.0.0.2:0")
        .await
        .expect("bind 127.0.0.2");
    let port = elsewhere.local_addr().expect("addr").port();
    let stolen = Arc::new(AtomicUsize::new(0));
    let thief = tokio::spawn(serve(
        elsewhere,
        Behaviour::Http10Close,
        Arc::clone(&stolen),
        Arc::new(AtomicUsize::new(0)),
    ));
    let Ran { report, .. } = run_against(Behaviour::Redirect(port), &[]).await;
    thief.abort();
    for r in &report {
        assert_eq!(
            (r.status, r.http_status),
            (Status::Failed, Some(302)),
            "{r:?}"
        );
    }
    assert_eq!(
        stolen.load(Ordering::Relaxed),
        0,
        "a request followed the redirect"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_1_0_with_close_is_understood() {
    let Ran { report, hits, .. } = run_against(Behaviour::Http10Close, &[]).await;
    assert_eq!(hits, 3);
    assert!(
        report
            .iter()
            .all(|r| r.status == Status::Ok && r.attempts == 1),
        "{report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_to_a_remote_host_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rows = vec![react("o", "r-1", "👍")];
    let plan = write_plan(
        dir.path(),
        "http://reactions.example.com",
        &rows,
        "rate: unlimited",
    );
    let report = dir.path().join("report.csv");
    let out = run_blocking(run_cmd(&plan, &report, &["--dry-run"])).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("plain http://"), "{}", stderr(&out));
    assert!(!report.exists(), "nothing may be written or sent");
    let out = run_blocking(run_cmd(
        &plan,
        &report,
        &["--dry-run", "--allow-insecure-http"],
    ))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// When [`keep_alive_run`]'s server closes a connection.
#[derive(Clone, Copy)]
enum Close {
    /// Never: every request on one connection.
    Never,
    /// This long after the first answer, without a word (an idle timeout).
    After(Duration),
    /// Right after the first answer, which says `connection: close`.
    Announced,
}

/// A server answering 200 to every request, counting requests and connections, closing them
/// as `close` says. Runs `rows` Ogmma rows against it with `settings`.
async fn keep_alive_run(
    close: Close,
    rows: usize,
    settings: &str,
) -> (std::process::Output, Vec<RowResult>, usize, usize) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let hits = Arc::new(AtomicUsize::new(0));
    let connections = Arc::new(AtomicUsize::new(0));
    let (h, c) = (Arc::clone(&hits), Arc::clone(&connections));
    let server = tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::Relaxed);
            let h = Arc::clone(&h);
            tokio::spawn(async move {
                while read_request(&mut sock).await {
                    h.fetch_add(1, Ordering::Relaxed);
                    let body = r#"{"success":true,"message":"Reacao processada"}"#;
                    let announce = match close {
                        Close::Announced => "connection: close\r\n",
                        Close::Never | Close::After(_) => "",
                    };
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\n{announce}content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if sock.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                    match close {
                        Close::Never => {}
                        Close::After(after) => {
                            // Keep-alive as far as the headers say; closed a little later.
                            tokio::time::sleep(after).await;
                            let _ = sock.shutdown().await;
                            return;
                        }
                        Close::Announced => {
                            let _ = sock.shutdown().await;
                            return;
                        }
                    }
                }
            });
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let rows: Vec<PlanRow> = (0..rows)
        .map(|i| react("o", format!("k-{i}"), "👍"))
        .collect();
    let plan = write_plan(dir.path(), &url, &rows, settings);
    let report = dir.path().join("report.csv");
    let mut cmd = run_cmd(&plan, &report, &[]);
    let out = tokio::task::spawn_blocking(move || output_within(&mut cmd, WATCHDOG))
        .await
        .expect("join");
    server.abort();
    let report = read_report(&report).expect("report");
    (
        out,
        report,
        hits.load(Ordering::Relaxed),
        connections.load(Ordering::Relaxed),
    )
}

/// A server that closes each keep-alive connection soon after answering on it (an idle
/// timeout far shorter than the gap between two rows). Each of a sender's requests then finds
/// its connection closed: it opens a fresh one and the row goes once, with one attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_connection_the_server_closed_is_replaced_without_a_lost_attempt() {
    // One sender, a row every 200 ms: every request after the first finds a closed connection.
    let (out, report, hits, connections) = keep_alive_run(
        Close::After(Duration::from_millis(20)),
        5,
        "rate: 5/s, concurrency: 1, retries: 0, timeout: 5s",
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        report
            .iter()
            .all(|r| r.status == Status::Ok && r.attempts == 1),
        "{report:?}"
    );
    assert_eq!(hits, 5, "each row reached the server once");
    assert_eq!(connections, 5, "a fresh connection per row");
}

/// The other side of the same coin: a server that keeps its connections open gets every row
/// of a sender on one connection (keep-alive is used, not a connection per request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sender_keeps_one_connection_open_for_all_its_rows() {
    let (out, report, hits, connections) = keep_alive_run(
        Close::Never,
        20,
        "rate: unlimited, concurrency: 1, retries: 0",
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(report.iter().all(|r| r.status == Status::Ok), "{report:?}");
    assert_eq!(hits, 20);
    assert_eq!(connections, 1, "one keep-alive connection");
}

/// `connection: close` on every answer: each of one sender's rows gets a fresh connection,
/// none is sent on a connection the server said it would close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_close_answers_are_honoured_by_one_sender() {
    let (out, report, hits, connections) = keep_alive_run(
        Close::Announced,
        8,
        "rate: unlimited, concurrency: 1, retries: 0",
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        report
            .iter()
            .all(|r| r.status == Status::Ok && r.attempts == 1),
        "{report:?}"
    );
    assert_eq!(hits, 8);
    assert_eq!(connections, 8);
}
