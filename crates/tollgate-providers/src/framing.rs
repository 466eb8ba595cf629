//! Streams as they pass: split into events (server-sent events, or the
//! elements of Gemini's streamed JSON array) to read each one, without
//! holding back what the client can already use.
//!
//! Bytes are passed on as they arrive. Only when an event must be removed
//! (an OpenAI usage chunk the client did not ask for) are whole events
//! passed on instead, each as soon as it is complete: a client cannot use
//! half an event anyway.

use bytes::{Bytes, BytesMut};

use crate::{Operation, Seen};

/// The longest partial event kept while waiting for its end; a stream
/// whose events grow past it is passed on untouched and no longer read.
const MAX_PENDING: usize = 4 << 20;

/// Watches one streamed response; see the module docs.
#[derive(Debug)]
pub struct StreamTap {
    op: Operation,
    sse: bool,
    strip_usage: bool,
    /// The incomplete end of the stream: part of an event.
    pending: BytesMut,
    /// JSON-array framing: nesting depth, inside a string, after a backslash.
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// Gave up reading (an event too large): pass everything on.
    blind: bool,
    seen: Seen,
}

impl StreamTap {
    pub(crate) fn new(op: Operation, sse: bool, strip_usage: bool) -> StreamTap {
        StreamTap {
            op,
            sse,
            strip_usage,
            pending: BytesMut::new(),
            depth: 0,
            in_string: false,
            escaped: false,
            blind: false,
            seen: Seen::default(),
        }
    }

    /// Reads `chunk`; returns what to pass on now.
    pub fn feed(&mut self, chunk: Bytes) -> Bytes {
        if self.blind {
            return chunk;
        }
        if !self.sse {
            self.feed_array(&chunk);
            return chunk;
        }
        self.pending.extend_from_slice(&chunk);
        let mut out = if self.strip_usage { Some(BytesMut::with_capacity(self.pending.len())) } else { None };
        while let Some(end) = event_end(&self.pending) {
            let event = self.pending.split_to(end).freeze();
            let keep = match data_of(&event) {
                Some(data) => self.op.api().adapter().event(self.op, &data, &mut self.seen, self.strip_usage),
                None => true,
            };
            if keep && let Some(out) = out.as_mut() {
                out.extend_from_slice(&event);
            }
        }
        if self.pending.len() > MAX_PENDING {
            self.blind = true;
            let rest = self.pending.split().freeze();
            return match out {
                Some(mut out) => {
                    out.extend_from_slice(&rest);
                    out.freeze()
                }
                None => chunk,
            };
        }
        match out {
            Some(out) => out.freeze(),
            None => chunk,
        }
    }

    /// The end of the stream: whatever is still held (an event without its
    /// closing blank line) is read, and passed on if it was held back (when
    /// nothing is stripped, its bytes went on as they came).
    pub fn finish(&mut self) -> Bytes {
        if !self.sse || self.pending.is_empty() {
            return Bytes::new();
        }
        let event = self.pending.split().freeze();
        let keep = match data_of(&event) {
            Some(data) if !self.blind => {
                self.op.api().adapter().event(self.op, &data, &mut self.seen, self.strip_usage)
            }
            _ => true,
        };
        if self.strip_usage && keep { event } else { Bytes::new() }
    }

    /// What the stream has shown so far.
    pub fn seen(&self) -> &Seen {
        &self.seen
    }

    /// Gemini without `alt=sse`: `[{…},\r\n{…}]`. An element is the bytes
    /// from a `{` at the array's level to its matching `}`.
    fn feed_array(&mut self, chunk: &[u8]) {
        for &b in chunk {
            let inside = self.depth >= 2;
            if self.in_string {
                if inside {
                    self.pending.extend_from_slice(&[b]);
                }
                match (self.escaped, b) {
                    (true, _) => self.escaped = false,
                    (false, b'\\') => self.escaped = true,
                    (false, b'"') => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'[' | b'{' => self.depth += 1,
                b']' | b'}' => self.depth = self.depth.saturating_sub(1),
                _ => {}
            }
            if inside || self.depth >= 2 {
                self.pending.extend_from_slice(&[b]);
            }
            if inside && self.depth == 1 {
                let element = self.pending.split().freeze();
                self.op.api().adapter().event(self.op, &element, &mut self.seen, false);
            } else if b == b']' && self.depth == 0 {
                self.seen.finished = true;
                self.seen.ended = true;
            }
            if self.pending.len() > MAX_PENDING {
                self.blind = true;
                self.pending.clear();
                return;
            }
        }
    }
}

/// Where the first complete event of `buf` ends (after its blank line).
fn event_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(at) = buf[i..].iter().position(|b| *b == b'\n' || *b == b'\r') {
        let n = i + at;
        let rest = &buf[n..];
        for separator in [&b"\r\n\r\n"[..], b"\n\n", b"\r\r"] {
            if rest.starts_with(separator) {
                return Some(n + separator.len());
            }
        }
        i = n + 1;
    }
    None
}

/// The `data:` lines of one event, joined by newlines; `None` when it has none.
fn data_of(event: &[u8]) -> Option<Vec<u8>> {
    let mut data: Option<Vec<u8>> = None;
    for line in event.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(value) = line.strip_prefix(b"data:") else { continue };
        let value = value.strip_prefix(b" ").unwrap_or(value);
        match data.as_mut() {
            Some(d) => {
                d.push(b'\n');
                d.extend_from_slice(value);
            }
            None => data = Some(value.to_vec()),
        }
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_end_at_a_blank_line_of_any_line_ending() {
        assert_eq!(event_end(b"data: a\n\ndata: b"), Some(9));
        assert_eq!(event_end(b"data: a\r\n\r\nx"), Some(11));
        assert_eq!(event_end(b"event: x\ndata: a\n"), None);
        assert_eq!(data_of(b"event: x\ndata: a\ndata:b\n\n").as_deref(), Some(&b"a\nb"[..]));
        assert_eq!(data_of(b": comment\n\n"), None);
    }

    /// Feeds `stream` cut at every `step` bytes; returns what was passed on.
    fn pass(tap: &mut StreamTap, stream: &[u8], step: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for piece in stream.chunks(step) {
            out.extend_from_slice(&tap.feed(Bytes::copy_from_slice(piece)));
        }
        out.extend_from_slice(&tap.finish());
        out
    }

    const OPENAI: &[u8] = b"data: {\"choices\":[{\"delta\":{\"content\":\"Hello\"}}],\"usage\":null}\n\n\
        data: {\"choices\":[{\"delta\":{\"content\":\" there\"},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n\
        data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2}}\n\n\
        data: [DONE]\n\n";

    #[test]
    fn an_openai_stream_loses_only_its_usage_chunk_however_it_is_cut() {
        for step in [1, 7, 64, OPENAI.len()] {
            let mut tap = StreamTap::new(Operation::ChatCompletions, true, true);
            let out = pass(&mut tap, OPENAI, step);
            let text = String::from_utf8(out).unwrap();
            assert!(!text.contains("prompt_tokens"), "step {step}: {text}");
            assert_eq!(text.matches("data: ").count(), 3, "step {step}: {text}");
            assert!(text.ends_with("data: [DONE]\n\n"));
            let seen = tap.seen();
            assert_eq!(seen.usage.map(|u| (u.input, u.output)), Some((9, 2)), "step {step}");
            assert_eq!(seen.text, "Hello there");
            assert!(seen.finished);
        }
    }

    #[test]
    fn a_stream_whose_client_asked_for_usage_passes_byte_for_byte() {
        let mut tap = StreamTap::new(Operation::ChatCompletions, true, false);
        assert_eq!(pass(&mut tap, OPENAI, 5), OPENAI);
        assert!(tap.seen().usage.is_some());
    }

    #[test]
    fn a_last_event_without_its_blank_line_passes_once_and_is_read() {
        let unterminated = &OPENAI[..OPENAI.len() - 1];
        for strip in [false, true] {
            for step in [1, 9, unterminated.len()] {
                let mut tap = StreamTap::new(Operation::ChatCompletions, true, strip);
                let text = String::from_utf8(pass(&mut tap, unterminated, step)).unwrap();
                assert_eq!(text.matches("[DONE]").count(), 1, "strip {strip}, step {step}: {text}");
                assert!(text.ends_with("data: [DONE]\n"), "strip {strip}, step {step}: {text}");
                assert!(tap.seen().finished && tap.seen().usage.is_some(), "strip {strip}, step {step}");
            }
        }
    }

    #[test]
    fn a_cut_stream_is_not_finished_and_keeps_the_text_that_passed() {
        let cut = &OPENAI[..OPENAI.len() - 40];
        let mut tap = StreamTap::new(Operation::ChatCompletions, true, true);
        pass(&mut tap, cut, 10);
        assert!(!tap.seen().finished && !tap.seen().ended);
        assert_eq!(tap.seen().text, "Hello there");
    }

    #[test]
    fn geminis_json_array_stream_is_read_element_by_element() {
        let stream = b"[{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a } [ \\\" \"}]}}],\
            \"usageMetadata\":{\"promptTokenCount\":4,\"candidatesTokenCount\":1}}\r\n,\
            {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"b\"}]},\"finishReason\":\"STOP\"}],\
            \"usageMetadata\":{\"promptTokenCount\":4,\"candidatesTokenCount\":2}}]";
        for step in [1, 3, stream.len()] {
            let mut tap = StreamTap::new(Operation::StreamGenerateContent, false, false);
            assert_eq!(pass(&mut tap, stream, step), stream, "passed untouched");
            let seen = tap.seen();
            assert_eq!(seen.text, "a } [ \" b", "step {step}");
            assert_eq!(seen.usage.map(|u| (u.input, u.output)), Some((4, 2)));
            assert!(seen.finished && seen.ended);
        }
    }
}
