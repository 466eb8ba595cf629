//! Sends a prepared list of frames as a streaming body: paced at the
//! configured tokens per second, cut abruptly after `cut_after` content
//! chunks, ended when the mock shuts down, and recorded however it ends
//! (finished, cut, or dropped because the client went away). Also writes
//! the named server-sent events Anthropic and the Responses API use.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::Exchange;
use crate::record::{Outcome, Usage};
use crate::reply::Knobs;

/// One write of a stream.
pub struct Frame {
    pub bytes: Bytes,
    /// Output tokens this frame carries; a frame with any is a content chunk.
    pub tokens: u64,
    /// Whether the response's final usage has been sent once this frame is.
    pub usage: bool,
}

impl Frame {
    pub fn other(bytes: impl Into<Bytes>) -> Frame {
        Frame { bytes: bytes.into(), tokens: 0, usage: false }
    }

    pub fn content(bytes: impl Into<Bytes>, tokens: u64) -> Frame {
        Frame { bytes: bytes.into(), tokens, usage: false }
    }

    pub fn usage(bytes: impl Into<Bytes>) -> Frame {
        Frame { bytes: bytes.into(), tokens: 0, usage: true }
    }
}

/// A named server-sent event: `event: NAME`, `data: JSON`, a blank line.
pub fn event(name: &str, data: &impl Serialize) -> Bytes {
    let mut buf = Vec::with_capacity(200);
    buf.extend_from_slice(b"event: ");
    buf.extend_from_slice(name.as_bytes());
    buf.extend_from_slice(b"\ndata: ");
    // Writing plain structs and JSON values into a Vec cannot fail.
    serde_json::to_writer(&mut buf, data).expect("an event serializes");
    buf.extend_from_slice(b"\n\n");
    Bytes::from(buf)
}

struct Streaming {
    exchange: Exchange,
    frames: std::vec::IntoIter<Frame>,
    usage: Usage,
    reported: bool,
    chunks: u32,
    tokens_sent: u64,
    cut_after: Option<u32>,
    interval: Option<Duration>,
    next_at: Option<Instant>,
    shutdown: watch::Receiver<bool>,
    completed: bool,
    ended: bool,
}

impl Drop for Streaming {
    fn drop(&mut self) {
        self.exchange.finish(Outcome {
            status: 200,
            usage: self.reported.then_some(self.usage),
            tokens_sent: self.tokens_sent,
            completed: self.completed,
        });
    }
}

/// A 200 whose body is `frames`, sent as the knobs and config say.
pub fn respond(
    exchange: Exchange,
    content_type: &'static str,
    frames: Vec<Frame>,
    usage: Usage,
    knobs: &Knobs,
) -> Response {
    let tps = knobs.tokens_per_second.or(exchange.shared.config.tokens_per_second);
    let state = Streaming {
        shutdown: exchange.shared.shutdown.clone(),
        exchange,
        frames: frames.into_iter(),
        usage,
        reported: false,
        chunks: 0,
        tokens_sent: 0,
        cut_after: knobs.cut_after,
        interval: tps.map(|t| Duration::from_secs_f64(1.0 / t)),
        next_at: None,
        completed: false,
        ended: false,
    };
    let body = futures_util::stream::unfold(state, |mut s| async move {
        if s.ended {
            return None;
        }
        let Some(tokens) = s.frames.as_slice().first().map(|f| f.tokens) else {
            s.completed = true;
            // Dropping the state records the outcome.
            drop(s);
            return None;
        };
        if tokens > 0 {
            if s.cut_after.is_some_and(|n| s.chunks >= n) {
                return Some((Err(s.cut().await), s));
            }
            if let Some(interval) = s.interval {
                let at = s.next_at.map_or_else(Instant::now, |at| at + interval);
                s.next_at = Some(at);
                let mut shutdown = s.shutdown.clone();
                let stopped = tokio::select! {
                    () = tokio::time::sleep_until(at) => false,
                    _ = shutdown.wait_for(|stop| *stop) => true,
                };
                if stopped {
                    return Some((Err(s.cut().await), s));
                }
            }
        }
        let frame = s.frames.next()?;
        if frame.tokens > 0 {
            s.chunks += 1;
            s.tokens_sent += frame.tokens;
        }
        s.reported |= frame.usage;
        Some((Ok(frame.bytes), s))
    });
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

impl Streaming {
    /// Ends the body with an error, which makes the server drop the
    /// connection without the closing chunk: the client sees a cut stream.
    async fn cut(&mut self) -> std::io::Error {
        // Let the server flush what was already yielded before the error
        // makes it drop the connection.
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        self.ended = true;
        std::io::Error::other("mock-llm: stream cut")
    }
}
