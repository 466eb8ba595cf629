//! A streamed answer on its way to the client: each upstream piece leaves
//! as soon as it arrives (an OpenAI usage chunk the client did not ask for
//! is taken out), the tap reads usage and text on the side, and neither
//! the stream's last word (`[DONE]`, `response.completed`,
//! `message_stop`, the `]` closing Gemini's JSON array) nor the body's end
//! leaves before the call's event is committed: SDKs stop reading at that
//! word (OpenAI's closes the response there).
//!
//! However the stream ends, the call is settled once: at its last word or
//! the upstream's end (the provider's usage, or an estimate when it
//! reported none); when the upstream breaks or falls silent past the idle
//! timeout (an estimate from the text that passed; the client's stream is
//! cut too, so that it sees an error rather than a clean end); when the
//! client goes away (the body is dropped: the upstream request is dropped
//! with it, which closes its connection, and the estimate is queued for
//! the writer at once, its answer awaited on a task of its own).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use futures_util::stream;
use tollgate_providers::StreamTap;

use super::accounting::{Outcome, Settlement, Spent};
use super::upstream::{self, Failure, Upstream};

struct Relay {
    upstream: Arc<Upstream>,
    response: upstream::Body,
    tap: StreamTap,
    settlement: Option<Settlement>,
    started: Instant,
    first_byte: Option<Duration>,
    sent: u64,
    phase: Phase,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Relaying,
    /// The upstream ended: settle, then end.
    Settling,
    Done,
}

impl Relay {
    fn outcome(&self, status: u16) -> Outcome {
        let seen = self.tap.seen();
        let exact = seen.finished && seen.usage.is_some();
        let spent = match (exact, seen.usage) {
            (true, Some(usage)) => Spent::Reported(usage),
            _ => {
                let encoding = self.settlement.as_ref().map(Settlement::encoding);
                let output = encoding.map_or(0, |e| seen.output_estimate(e));
                Spent::Estimated { usage: seen.usage, output }
            }
        };
        Outcome {
            status,
            succeeded: true,
            spent,
            first_byte: self.first_byte,
            response_bytes: self.sent,
            stored: seen.stored.clone(),
        }
    }

    /// Settles the call, if it is not yet, as answered whole; an error
    /// to cut the client's stream with when it could not be recorded.
    async fn settle(&mut self) -> Result<(), std::io::Error> {
        if self.settlement.is_none() {
            return Ok(());
        }
        let outcome = self.outcome(200);
        let Some(settlement) = self.settlement.take() else { return Ok(()) };
        match settlement.settle(outcome).await {
            Ok(()) => Ok(()),
            // Not recorded: the client must not see a clean end.
            Err(e) => {
                tracing::error!(error = %e, "failed to record a stream's usage");
                Err(cut("failed to record the usage".into()).await)
            }
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // The client went away before the end: settle what passed.
        if self.settlement.is_some() {
            let outcome = self.outcome(499);
            if let Some(settlement) = self.settlement.take() {
                settlement.settle_later(outcome);
            }
        }
    }
}

/// The client's body for a 2xx upstream stream.
pub fn body(
    upstream: Arc<Upstream>,
    response: upstream::Body,
    tap: StreamTap,
    settlement: Settlement,
    started: Instant,
) -> Body {
    let relay = Relay {
        upstream,
        response,
        tap,
        settlement: Some(settlement),
        started,
        first_byte: None,
        sent: 0,
        phase: Phase::Relaying,
    };
    Body::from_stream(stream::unfold(relay, |mut r| async move {
        loop {
            match r.phase {
                Phase::Done => return None,
                Phase::Settling => {
                    r.phase = Phase::Done;
                    return match r.settle().await {
                        Ok(()) => None,
                        Err(cut) => Some((Err(cut), r)),
                    };
                }
                Phase::Relaying => {}
            }
            match r.upstream.next(&mut r.response).await {
                Ok(Some(chunk)) => {
                    r.first_byte.get_or_insert_with(|| r.started.elapsed());
                    let out = r.tap.feed(chunk);
                    r.sent += out.len() as u64;
                    if r.tap.seen().ended
                        && let Err(cut) = r.settle().await
                    {
                        r.phase = Phase::Done;
                        return Some((Err(cut), r));
                    }
                    if !out.is_empty() {
                        return Some((Ok::<Bytes, std::io::Error>(out), r));
                    }
                }
                Ok(None) => {
                    r.phase = Phase::Settling;
                    let rest = r.tap.finish();
                    if !rest.is_empty() {
                        r.sent += rest.len() as u64;
                        return Some((Ok(rest), r));
                    }
                }
                Err(failure) => {
                    let why = match &failure {
                        Failure::Broken(why) => why.clone(),
                        Failure::Timeout(what, after) => format!("no {what} within {} s", after.as_secs()),
                    };
                    tracing::warn!(reason = %why, "an upstream stream broke off; cutting the client's");
                    r.phase = Phase::Done;
                    let outcome = r.outcome(200);
                    if let Some(settlement) = r.settlement.take()
                        && let Err(e) = settlement.settle(outcome).await
                    {
                        tracing::error!(error = %e, "failed to record a cut stream's usage");
                    }
                    return Some((Err(cut(format!("the provider's stream broke off: {why}")).await), r));
                }
            }
        }
    }))
}

/// The error that cuts the client's stream, once what passed before it has
/// left: when a body fails, hyper drops what it has not written yet, and it
/// writes what it holds whenever the body has nothing ready, so the body
/// waits one turn first. (A settlement can finish without waiting at all.)
async fn cut(why: String) -> std::io::Error {
    tokio::task::yield_now().await;
    std::io::Error::other(why)
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::routing::get;
    use futures_util::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// Two pieces ready at once, then the cut: without its turn, hyper
    /// drops both and the client reads nothing at all.
    #[tokio::test]
    async fn what_passed_before_a_cut_reaches_the_client_and_the_stream_does_not_end_cleanly() {
        let app = Router::new().route(
            "/",
            get(|| async {
                let passed = stream::iter(["data: one\n\n", "data: two\n\n"])
                    .map(|piece| Ok::<_, std::io::Error>(Bytes::from_static(piece.as_bytes())));
                let cut = stream::once(async { Err(cut("the provider's stream broke off".into()).await) });
                Body::from_stream(passed.chain(cut))
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(crate::serve::serve(listener, app, std::future::pending()));
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n").await.unwrap();
        let mut answer = Vec::new();
        // A cut connection may end in a reset: what came before it counts.
        let _ = tcp.read_to_end(&mut answer).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("data: one") && answer.contains("data: two"), "{answer}");
        assert!(!answer.ends_with("0\r\n\r\n"), "no last chunk: {answer}");
    }
}
