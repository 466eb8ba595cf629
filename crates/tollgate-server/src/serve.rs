//! The accept loop: each connection is served by hyper's HTTP/1.1
//! connection, the router seeing the peer's address as axum's
//! `ConnectInfo`.
//!
//! Not `axum::serve`: that one serves through hyper-util's `auto` builder,
//! which first reads a new connection's opening bytes to tell HTTP/2 from
//! HTTP/1 and hands them back through a wrapper. Tollgate speaks HTTP/1.1
//! only, and the sniff costs every connection a read of its own and a read
//! buffer grown to 16 KiB where 8 KiB serve (hyper's first read then takes
//! only the sniffed bytes): some 20 MB more RSS for 5,000 open streams.

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

/// Serves `app` on `listener` until `shutdown` resolves; then stops
/// accepting, lets each connection finish the request it is on (idle ones
/// close at once), and returns when every connection has closed.
pub async fn serve(listener: TcpListener, app: Router, shutdown: impl Future<Output = ()>) {
    // Dropped when shutdown begins: every connection sees it.
    let (stopping, stop) = watch::channel(());
    // Held by every connection: closed once the last one ends.
    let (all_closed, open) = watch::channel(());
    let mut shutdown = pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    pause_after(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Streamed answers go out chunk by chunk: no waiting for Nagle.
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let mut stop = stop.clone();
        let open = open.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                app.clone().oneshot(req.map(Body::new))
            });
            let mut conn = pin!(http1::Builder::new().serve_connection(TokioIo::new(tcp), service));
            tokio::select! {
                served = conn.as_mut() => log_failure(served),
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    log_failure(conn.await);
                }
            }
            drop(open);
        });
    }
    drop(listener);
    drop(stopping);
    drop(open);
    all_closed.closed().await;
}

fn log_failure(served: hyper::Result<()>) {
    if let Err(e) = served {
        tracing::debug!(error = %e, "a connection ended in error");
    }
}

/// After a failed accept: a connection that went away before it was taken
/// is the peer's business; anything else (out of file descriptors, say) is
/// said, and the loop waits a second rather than spinning on it.
async fn pause_after(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        return;
    }
    tracing::error!(error = %e, "failed to accept a connection");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::sync::oneshot;

    use super::*;

    /// Reads the body of a `Connection: close` answer to `GET path`.
    async fn get_over(mut tcp: TcpStream, path: &str) -> String {
        let request = format!("GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        answer.split_once("\r\n\r\n").unwrap().1.to_owned()
    }

    #[tokio::test]
    async fn the_router_sees_the_peer_and_a_shutdown_lets_the_request_in_flight_finish() {
        let (entered, in_flight) = oneshot::channel::<()>();
        let (release, released) = oneshot::channel::<()>();
        let slow = Arc::new(Mutex::new(Some((entered, released))));
        let app = Router::new()
            .route("/peer", get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }))
            .route(
                "/slow",
                get(move || async move {
                    let (entered, released) = slow.lock().unwrap().take().unwrap();
                    entered.send(()).unwrap();
                    released.await.unwrap();
                    "done"
                }),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, app, async {
            let _ = stopped.await;
        }));

        let tcp = TcpStream::connect(addr).await.unwrap();
        let me = tcp.local_addr().unwrap();
        assert_eq!(get_over(tcp, "/peer").await, me.to_string());

        // A connection kept alive after its answer, idle at the shutdown.
        let mut idle = TcpStream::connect(addr).await.unwrap();
        idle.write_all(b"GET /peer HTTP/1.1\r\nhost: test\r\n\r\n").await.unwrap();
        let peer = idle.local_addr().unwrap().to_string();
        let mut answer = Vec::new();
        while !String::from_utf8_lossy(&answer).ends_with(&peer) {
            let mut piece = [0; 512];
            let n = idle.read(&mut piece).await.unwrap();
            assert!(n > 0, "the kept-alive connection answered");
            answer.extend_from_slice(&piece[..n]);
        }

        let slow = tokio::spawn(get_over(TcpStream::connect(addr).await.unwrap(), "/slow"));
        in_flight.await.unwrap();
        stop.send(()).unwrap();
        // The listener closes; the request in flight keeps the server up.
        let mut refused = false;
        for _ in 0..100 {
            if TcpStream::connect(addr).await.is_err() {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(refused, "new connections are refused once the shutdown began");
        assert!(!server.is_finished(), "the server waits for the request in flight");
        release.send(()).unwrap();
        assert_eq!(slow.await.unwrap(), "done");
        // The idle connection was closed rather than waited for.
        tokio::time::timeout(Duration::from_secs(10), server).await.expect("the server returns").unwrap();
        assert_eq!(idle.read(&mut [0; 16]).await.unwrap(), 0, "the idle connection was closed");
    }
}
