//! The pool against the in-process sandbox over loopback: permits move between origins, a
//! sender waits for one rather than open past the bound, HTTPS goes through a CONNECT
//! tunnel. Counts only; every wait has a generous hang guard.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Uri};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::super::connect::{Origin, Proxy, Route, Tls};
use super::*;
use crate::sandbox::{Sandbox, SandboxConfig};

/// A hang is forever; these take milliseconds.
const GUARD: Duration = Duration::from_secs(30);

/// An unsigned POST to `url` (the sandbox answers it with a refusal: any status will do),
/// in origin form with `Host`, and the URL itself.
fn post(url: &str) -> (Request<Body>, Uri) {
    let absolute: Uri = url.parse().expect("url");
    let mut request = Request::new(Full::new(Bytes::from_static(b"{}")));
    *request.method_mut() = hyper::Method::POST;
    *request.uri_mut() = absolute
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse()
        .expect("path");
    let host = absolute.authority().expect("authority").as_str();
    request.headers_mut().insert(
        hyper::header::HOST,
        hyper::header::HeaderValue::from_str(host).expect("host"),
    );
    (request, absolute)
}

async fn status(pool: &Pool, slot: &Slot, url: &str) -> u16 {
    let (request, absolute) = post(url);
    let answer = tokio::time::timeout(GUARD, pool.exchange(slot, request, &absolute))
        .await
        .expect("hang guard")
        .expect("an answer");
    answer.status
}

/// A URL on `sandbox` and its origin's slot in `pool`.
fn at(pool: &Pool, sandbox: &crate::sandbox::SandboxHandle) -> (String, Arc<Slot>) {
    let url = format!("{}/x", sandbox.base_url());
    let slot = pool
        .slot(&url::Url::parse(&url).expect("url"))
        .expect("slot");
    (url, slot)
}

fn idle(slot: &Slot) -> usize {
    lock(&slot.state).idle.len()
}

/// Both permits held by idle connections to one origin: a request to another origin closes
/// one of them and takes its permit, rather than wait for ever or open a third.
#[tokio::test]
async fn an_idle_connection_gives_its_permit_to_another_origin() {
    let a = Sandbox::start(SandboxConfig::new()).await.expect("sandbox");
    let b = Sandbox::start(SandboxConfig::new()).await.expect("sandbox");
    let pool = Pool::new(2, Tls::new(Vec::new()), GUARD);
    let ((url_a, slot_a), (url_b, slot_b)) = (at(&pool, &a), at(&pool, &b));
    let (s1, s2) = tokio::join!(
        status(&pool, &slot_a, &url_a),
        status(&pool, &slot_a, &url_a)
    );
    assert!(s1 >= 200 && s2 >= 200);
    assert_eq!(idle(&slot_a), 2);
    assert_eq!(pool.permits.available_permits(), 0);
    assert!(status(&pool, &slot_b, &url_b).await >= 200);
    assert_eq!((idle(&slot_a), idle(&slot_b)), (1, 1));
    assert_eq!(pool.permits.available_permits(), 0);
    // Reused, not reopened: origin A saw two connections in all, B one.
    assert!(status(&pool, &slot_a, &url_a).await >= 200);
    assert_eq!(a.stats().connections.accepted, 2);
    assert_eq!(b.stats().connections.accepted, 1);
    a.shutdown().await;
    b.shutdown().await;
}

/// One permit, three senders at once to two origins: each waits its turn, every request is
/// answered, and no more than one connection is ever open on the client's side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn senders_wait_for_a_permit_when_every_connection_is_busy() {
    let a = Sandbox::start(SandboxConfig::new().latency(Duration::from_millis(20)))
        .await
        .expect("sandbox");
    let b = Sandbox::start(SandboxConfig::new()).await.expect("sandbox");
    let pool = Pool::new(1, Tls::new(Vec::new()), GUARD);
    let ((url_a, slot_a), (url_b, slot_b)) = (at(&pool, &a), at(&pool, &b));
    let (s1, s2, s3) = tokio::join!(
        status(&pool, &slot_a, &url_a),
        status(&pool, &slot_b, &url_b),
        status(&pool, &slot_a, &url_a),
    );
    assert!(s1 >= 200 && s2 >= 200 && s3 >= 200);
    assert!(idle(&slot_a) + idle(&slot_b) <= 1);
    assert_eq!(
        pool.permits.available_permits(),
        1 - (idle(&slot_a) + idle(&slot_b))
    );
    a.shutdown().await;
    b.shutdown().await;
}

/// HTTPS through a proxy: a CONNECT to the origin, then TLS (HTTP/2 by ALPN) inside the
/// tunnel, with the proxy's credentials on the CONNECT request only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_through_a_proxy_goes_by_connect_tunnel() {
    let sandbox = Sandbox::start(SandboxConfig::new().tls(true))
        .await
        .expect("sandbox");
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let proxy_addr = proxy.local_addr().expect("addr");
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = Arc::clone(&seen);
    let server = tokio::spawn(async move {
        while let Ok((mut client, _)) = proxy.accept().await {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if client.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let Some(dst) = head
                    .strip_prefix("CONNECT ")
                    .and_then(|r| r.split(' ').next())
                else {
                    return;
                };
                let Ok(mut upstream) = tokio::net::TcpStream::connect(dst).await else {
                    return;
                };
                if let Ok(mut log) = log.lock() {
                    log.push(head.clone());
                }
                if client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await
                    .is_err()
                {
                    return;
                }
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    let ca = crate::executor::transport::Trust::from_pem(
        sandbox.ca_pem().expect("a TLS sandbox has a CA").as_bytes(),
    )
    .expect("CA");
    let pool = Pool::new(4, Tls::new(ca.extra_roots), GUARD);
    let url = format!("{}/x", sandbox.base_url());
    let parsed = url::Url::parse(&url).expect("url");
    // Loopback is never proxied by the environment's settings: the route is set by hand.
    let origin = Origin {
        route: Route::Tunnel(Proxy {
            uri: format!("http://{proxy_addr}").parse().expect("proxy"),
            auth: Some(hyper::header::HeaderValue::from_static("Basic dTpw")),
        }),
        ..Origin::of(&parsed, &Matcher::builder().build()).expect("origin")
    };
    let slot = Slot {
        origin,
        state: Mutex::default(),
        probe: tokio::sync::Mutex::new(()),
    };
    for _ in 0..3 {
        assert!(status(&pool, &slot, &url).await >= 200);
    }
    server.abort();
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    // One tunnel: the three requests share its HTTP/2 connection.
    assert_eq!(seen.len(), 1, "{seen:?}");
    let port = sandbox.addr().port();
    assert!(
        seen[0].starts_with(&format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\n")),
        "{}",
        seen[0]
    );
    assert!(
        seen[0]
            .to_ascii_lowercase()
            .contains("proxy-authorization: basic dtpw"),
        "{}",
        seen[0]
    );
    let stats = sandbox.stats();
    assert_eq!(stats.by_version.get("HTTP/2"), Some(&3), "{stats:?}");
    assert_eq!(stats.connections.accepted, 1);
    sandbox.shutdown().await;
}

#[test]
fn a_capped_body_keeps_its_first_max_body_bytes() {
    let mut body = Vec::new();
    assert!(append_capped(&mut body, &[1; 1000]));
    assert!(!append_capped(&mut body, &vec![2; MAX_BODY]));
    assert_eq!(body.len(), MAX_BODY);
    assert_eq!(body[999], 1);
    assert_eq!(body[1000], 2);
}
