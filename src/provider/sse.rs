//! Incremental Server-Sent Events parser over raw bytes.
//!
//! Why not `eventsource-stream`: its UTF-8 layer keeps undecodable bytes in its buffer and
//! retries on every new chunk, so one garbage byte silently swallows every later event until EOF
//! (a broken stream looks like a stall, and memory grows without bound). Splitting lines on raw
//! bytes first and decoding each complete line avoids both: a newline byte never occurs inside a
//! multi-byte UTF-8 sequence, so chunk splits anywhere are harmless, and a bad line fails at once.
//! It is also synchronous (feed bytes, get events), which keeps the idle/first-token timers in
//! the stream driver in one place and makes every-split-point tests trivial.

use std::fmt;

/// One dispatched server-sent event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, or `"message"` when the event had none.
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// A byte stream that is not a valid event stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SseError {
    /// A line was not valid UTF-8.
    InvalidUtf8,
    /// A single line grew beyond the limit without a line break.
    LineTooLong(usize),
}

impl fmt::Display for SseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SseError::InvalidUtf8 => f.write_str("event stream line is not valid UTF-8"),
            SseError::LineTooLong(n) => write!(f, "event stream line longer than {n} bytes"),
        }
    }
}

impl std::error::Error for SseError {}

/// Longest line accepted; a provider sending more without a newline is broken.
pub const MAX_LINE: usize = 16 * 1024 * 1024;

/// Incremental SSE parser (WHATWG rules: LF, CRLF or CR line ends, `:` comments, multi-line
/// `data`, optional space after the colon, leading BOM). Feed chunks split anywhere.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the current, not yet terminated line.
    line: Vec<u8>,
    /// The previous chunk ended in CR: a leading LF in the next chunk completes that CRLF.
    skip_lf: bool,
    /// Nothing has been parsed yet (a BOM is only stripped here).
    started: bool,
    event: String,
    data: String,
    has_data: bool,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parse `chunk`, appending every event it completes to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        let mut i = 0;
        if chunk.is_empty() {
            return Ok(());
        }
        if self.skip_lf {
            self.skip_lf = false;
            if chunk[0] == b'\n' {
                i = 1;
            }
        }
        while i < chunk.len() {
            let rest = &chunk[i..];
            match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
                None => {
                    if self.line.len() + rest.len() > MAX_LINE {
                        return Err(SseError::LineTooLong(MAX_LINE));
                    }
                    self.line.extend_from_slice(rest);
                    break;
                }
                Some(p) => {
                    if self.line.is_empty() {
                        self.process_line(&rest[..p], out)?;
                    } else {
                        let mut line = std::mem::take(&mut self.line);
                        line.extend_from_slice(&rest[..p]);
                        self.process_line(&line, out)?;
                        line.clear();
                        self.line = line;
                    }
                    let end = i + p;
                    i = end + 1;
                    if chunk[end] == b'\r' {
                        if i < chunk.len() {
                            if chunk[i] == b'\n' {
                                i += 1;
                            }
                        } else {
                            self.skip_lf = true;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether bytes of an unfinished line or event are buffered (useful for diagnostics at EOF;
    /// per the spec an unterminated event is discarded).
    pub fn has_pending(&self) -> bool {
        !self.line.is_empty() || self.has_data
    }

    fn process_line(&mut self, raw: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        let mut line = simdutf8::basic::from_utf8(raw).map_err(|_| SseError::InvalidUtf8)?;
        if !self.started {
            self.started = true;
            line = line.strip_prefix('\u{feff}').unwrap_or(line);
        }
        if line.is_empty() {
            if self.has_data {
                let event = if self.event.is_empty() { "message".to_string() } else { std::mem::take(&mut self.event) };
                out.push(SseEvent { event, data: std::mem::take(&mut self.data) });
            }
            self.event.clear();
            self.data.clear();
            self.has_data = false;
            return Ok(());
        }
        if line.starts_with(':') {
            return Ok(());
        }
        let (field, value) = match line.find(':') {
            Some(c) => {
                let v = &line[c + 1..];
                (&line[..c], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.event = value.to_string(),
            // `id` and `retry` matter for browser reconnection only; nothing here reconnects.
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> Result<Vec<SseEvent>, SseError> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, &mut out)?;
        }
        Ok(out)
    }

    fn ev(event: &str, data: &str) -> SseEvent {
        SseEvent { event: event.into(), data: data.into() }
    }

    /// Every way of cutting `stream` in two and in three pieces parses to `expected`.
    fn check_all_splits(stream: &[u8], expected: &[SseEvent]) {
        assert_eq!(parse_all(&[stream]).unwrap(), expected, "whole stream");
        for a in 0..=stream.len() {
            let got = parse_all(&[&stream[..a], &stream[a..]]).unwrap();
            assert_eq!(got, expected, "split at {a}");
        }
        // Three pieces: every a, with b stepping so the test stays quick on long streams.
        let step = (stream.len() / 40).max(1);
        for a in 0..=stream.len() {
            for b in (a..=stream.len()).step_by(step) {
                let got = parse_all(&[&stream[..a], &stream[a..b], &stream[b..]]).unwrap();
                assert_eq!(got, expected, "split at {a},{b}");
            }
        }
        // One byte at a time.
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(parse_all(&bytes).unwrap(), expected, "byte by byte");
    }

    #[test]
    fn openai_stream_all_splits() {
        let s = "data: {\"choices\":[{\"delta\":{\"content\":\"caf\u{e9} \"}}]}\n\n\
                 : keep-alive\n\n\
                 data: {\"choices\":[{\"delta\":{\"content\":\"\u{1F600}!\"}}]}\n\n\
                 data: [DONE]\n\n";
        check_all_splits(
            s.as_bytes(),
            &[
                ev("message", "{\"choices\":[{\"delta\":{\"content\":\"caf\u{e9} \"}}]}"),
                ev("message", "{\"choices\":[{\"delta\":{\"content\":\"\u{1F600}!\"}}]}"),
                ev("message", "[DONE]"),
            ],
        );
    }

    #[test]
    fn anthropic_stream_crlf_all_splits() {
        let s = "event: message_start\r\ndata: {\"type\":\"message_start\"}\r\n\r\n\
                 event: ping\r\ndata: {\"type\": \"ping\"}\r\n\r\n\
                 event: content_block_delta\r\ndata: {\"delta\":{\"text\":\"\u{e9}t\u{e9} \u{1F600}\"}}\r\n\r\n\
                 event: message_stop\r\ndata: {\"type\":\"message_stop\"}\r\n\r\n";
        check_all_splits(
            s.as_bytes(),
            &[
                ev("message_start", "{\"type\":\"message_start\"}"),
                ev("ping", "{\"type\": \"ping\"}"),
                ev("content_block_delta", "{\"delta\":{\"text\":\"\u{e9}t\u{e9} \u{1F600}\"}}"),
                ev("message_stop", "{\"type\":\"message_stop\"}"),
            ],
        );
    }

    #[test]
    fn gemini_stream_multiline_and_cr_all_splits() {
        // Bare CR line ends, a multi-line data field, a comment and a field without a space.
        let s = "\u{feff}: hello\rdata: {\"candidates\":\r\ndata:[{\"text\":\"na\u{ef}ve\"}]}\r\r\
                 data: {\"finishReason\":\"STOP\"}\n\n";
        check_all_splits(s.as_bytes(), &[ev("message", "{\"candidates\":\n[{\"text\":\"na\u{ef}ve\"}]}"), ev("message", "{\"finishReason\":\"STOP\"}")]);
    }

    #[test]
    fn unterminated_event_is_not_dispatched() {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        p.feed(b"data: a\n\ndata: partial", &mut out).unwrap();
        assert_eq!(out, vec![ev("message", "a")]);
        assert!(p.has_pending());
    }

    #[test]
    fn empty_data_and_event_without_data() {
        let got = parse_all(&[b"event: x\n\ndata:\n\n"]).unwrap();
        assert_eq!(got, vec![ev("message", "")]);
    }

    #[test]
    fn invalid_utf8_fails_at_once_not_at_eof() {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        p.feed(b"data: ok\n\n", &mut out).unwrap();
        assert_eq!(p.feed(&[b'd', b':', 0xff, 0xfe, b'\n'], &mut out), Err(SseError::InvalidUtf8));
        assert_eq!(out.len(), 1);
    }
}
