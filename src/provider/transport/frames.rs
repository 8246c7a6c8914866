//! A passive reader of the HTTP/2 frames a peer sends, and an I/O wrapper that feeds it.
//!
//! hyper's HTTP/2 client tells its user neither the peer's `SETTINGS_MAX_CONCURRENT_STREAMS`
//! nor that a GOAWAY arrived; the pool needs both the moment they arrive (to open another
//! connection at the stream limit, and to stop sending on a connection that is going away), so
//! [`Tapped`] reads the same bytes hyper reads and reports those frames. The mock uses the same
//! reader on its side to count what clients send (RST_STREAM, PING).
//!
//! Only frame headers are parsed, plus the few payload bytes of SETTINGS, GOAWAY and RST_STREAM;
//! nothing is buffered beyond 9 bytes, and bytes that do not start like HTTP/2 (an HTTP/1.1
//! connection on the server side) turn the reader off.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What the client sends first on every HTTP/2 connection (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const DATA: u8 = 0x0;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const FLAG_ACK: u8 = 0x1;
const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;

/// A frame of interest, reported once it has been read whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // the fields are the frame's own, named as RFC 9113 names them
pub enum Frame {
    /// A SETTINGS frame (not an acknowledgement); the stream limit when it carries one.
    Settings { max_concurrent_streams: Option<u32> },
    /// The peer will accept no stream above `last_stream_id`; `code` is its error code.
    GoAway { last_stream_id: u32, code: u32 },
    /// The peer reset one stream with error `code`.
    RstStream { stream_id: u32, code: u32 },
    /// A PING that is not an acknowledgement.
    Ping,
    /// A DATA frame of `len` bytes on `stream_id` (counted, not kept).
    Data { stream_id: u32, len: u32 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Matching the client preface (server side); the count of bytes matched so far.
    Preface(usize),
    Head,
    Payload,
    Off,
}

/// Incremental frame parser; feed it every byte read, in order.
#[derive(Clone, Debug)]
pub struct FrameReader {
    state: State,
    head: [u8; 9],
    have: usize,
    kind: u8,
    flags: u8,
    stream_id: u32,
    len: u32,
    left: u32,
    /// The first payload bytes of GOAWAY/RST_STREAM, or the current SETTINGS entry.
    small: [u8; 8],
    small_have: usize,
    max_streams: Option<u32>,
}

impl FrameReader {
    /// A reader of what a server sends (frames from the first byte).
    pub fn from_server() -> Self {
        Self::with_state(State::Head)
    }

    /// A reader of what a client sends: the preface, then frames. Anything else (HTTP/1.1)
    /// turns it off.
    pub fn from_client() -> Self {
        Self::with_state(State::Preface(0))
    }

    fn with_state(state: State) -> Self {
        FrameReader { state, head: [0; 9], have: 0, kind: 0, flags: 0, stream_id: 0, len: 0, left: 0, small: [0; 8], small_have: 0, max_streams: None }
    }

    /// Whether the bytes so far are HTTP/2 (always true for a server-side reader until garbage
    /// would be seen; a client-side reader turns off on a non-preface start).
    pub fn is_on(&self) -> bool {
        self.state != State::Off
    }

    /// Whether the client preface has been read in full (server side).
    pub fn saw_preface(&self) -> bool {
        matches!(self.state, State::Head | State::Payload)
    }

    /// Consume `data`, reporting each complete frame of interest to `on`.
    pub fn feed(&mut self, mut data: &[u8], on: &mut impl FnMut(Frame)) {
        while !data.is_empty() {
            match self.state {
                State::Off => return,
                State::Preface(n) => {
                    let take = (PREFACE.len() - n).min(data.len());
                    if data[..take] != PREFACE[n..n + take] {
                        self.state = State::Off;
                        return;
                    }
                    data = &data[take..];
                    self.state = if n + take == PREFACE.len() { State::Head } else { State::Preface(n + take) };
                }
                State::Head => {
                    let take = (9 - self.have).min(data.len());
                    self.head[self.have..self.have + take].copy_from_slice(&data[..take]);
                    self.have += take;
                    data = &data[take..];
                    if self.have == 9 {
                        self.have = 0;
                        let h = &self.head;
                        self.len = u32::from_be_bytes([0, h[0], h[1], h[2]]);
                        self.kind = h[3];
                        self.flags = h[4];
                        self.stream_id = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                        self.left = self.len;
                        self.small_have = 0;
                        self.max_streams = None;
                        if self.left == 0 {
                            self.finish(on);
                        } else {
                            self.state = State::Payload;
                        }
                    }
                }
                State::Payload => {
                    let take = (self.left as usize).min(data.len());
                    self.payload(&data[..take]);
                    self.left -= take as u32;
                    data = &data[take..];
                    if self.left == 0 {
                        self.state = State::Head;
                        self.finish(on);
                    }
                }
            }
        }
    }

    fn payload(&mut self, bytes: &[u8]) {
        match self.kind {
            SETTINGS if self.flags & FLAG_ACK == 0 => {
                // Entries are 6 bytes: identifier (16 bits), value (32 bits).
                for &b in bytes {
                    self.small[self.small_have] = b;
                    self.small_have += 1;
                    if self.small_have == 6 {
                        self.small_have = 0;
                        let s = &self.small;
                        if u16::from_be_bytes([s[0], s[1]]) == SETTINGS_MAX_CONCURRENT_STREAMS {
                            self.max_streams = Some(u32::from_be_bytes([s[2], s[3], s[4], s[5]]));
                        }
                    }
                }
            }
            GOAWAY | RST_STREAM => {
                let room = self.small.len() - self.small_have;
                let take = room.min(bytes.len());
                self.small[self.small_have..self.small_have + take].copy_from_slice(&bytes[..take]);
                self.small_have += take;
            }
            _ => {}
        }
    }

    fn finish(&mut self, on: &mut impl FnMut(Frame)) {
        self.state = State::Head;
        let s = self.small;
        match self.kind {
            SETTINGS if self.flags & FLAG_ACK == 0 => on(Frame::Settings { max_concurrent_streams: self.max_streams }),
            GOAWAY if self.small_have >= 8 => on(Frame::GoAway {
                last_stream_id: u32::from_be_bytes([s[0], s[1], s[2], s[3]]) & 0x7fff_ffff,
                code: u32::from_be_bytes([s[4], s[5], s[6], s[7]]),
            }),
            RST_STREAM if self.small_have >= 4 => on(Frame::RstStream { stream_id: self.stream_id, code: u32::from_be_bytes([s[0], s[1], s[2], s[3]]) }),
            PING if self.flags & FLAG_ACK == 0 => on(Frame::Ping),
            DATA => on(Frame::Data { stream_id: self.stream_id, len: self.len }),
            _ => {}
        }
    }
}

/// Who hears about the frames a [`Tapped`] stream reads.
pub trait FrameSink: Send + Sync {
    /// Called on the reading task, in order, once per complete frame of interest.
    fn frame(&self, frame: Frame);
}

/// An I/O stream whose incoming bytes also go through a [`FrameReader`]. Writes pass through.
pub struct Tapped<T> {
    inner: T,
    reader: FrameReader,
    sink: Arc<dyn FrameSink>,
}

impl<T> Tapped<T> {
    /// Wrap `inner`; `reader` says which side's frames it reads.
    pub fn new(inner: T, reader: FrameReader, sink: Arc<dyn FrameSink>) -> Self {
        Tapped { inner, reader, sink }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tapped<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            if this.reader.is_on() {
                let sink = &this.sink;
                this.reader.feed(&buf.filled()[before..], &mut |f| sink.frame(f));
            }
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tapped<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut v = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        v.extend_from_slice(&stream.to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    fn sample() -> (Vec<u8>, Vec<Frame>) {
        let mut bytes = PREFACE.to_vec();
        // SETTINGS: header table size 4096, max concurrent streams 7, initial window 65535.
        let mut settings = Vec::new();
        for (id, v) in [(1u16, 4096u32), (3, 7), (4, 65_535)] {
            settings.extend_from_slice(&id.to_be_bytes());
            settings.extend_from_slice(&v.to_be_bytes());
        }
        bytes.extend(frame(SETTINGS, 0, 0, &settings));
        bytes.extend(frame(SETTINGS, FLAG_ACK, 0, &[]));
        bytes.extend(frame(0x1, 0x4, 1, &[0x82; 20])); // HEADERS: ignored
        bytes.extend(frame(DATA, 0, 1, &[b'x'; 100]));
        bytes.extend(frame(PING, 0, 0, &[1; 8]));
        bytes.extend(frame(PING, FLAG_ACK, 0, &[1; 8]));
        bytes.extend(frame(RST_STREAM, 0, 3, &8u32.to_be_bytes()));
        let mut goaway = 5u32.to_be_bytes().to_vec();
        goaway.extend_from_slice(&0u32.to_be_bytes());
        goaway.extend_from_slice(b"debug data that is skipped");
        bytes.extend(frame(GOAWAY, 0, 0, &goaway));
        bytes.extend(frame(SETTINGS, 0, 0, &[])); // empty SETTINGS: no limit in it
        let want = vec![
            Frame::Settings { max_concurrent_streams: Some(7) },
            Frame::Data { stream_id: 1, len: 100 },
            Frame::Ping,
            Frame::RstStream { stream_id: 3, code: 8 },
            Frame::GoAway { last_stream_id: 5, code: 0 },
            Frame::Settings { max_concurrent_streams: None },
        ];
        (bytes, want)
    }

    #[test]
    fn frames_are_read_whatever_the_read_sizes() {
        let (bytes, want) = sample();
        for step in [1, 2, 3, 5, 7, 9, 13, 64, bytes.len()] {
            let mut r = FrameReader::from_client();
            let mut got = Vec::new();
            for chunk in bytes.chunks(step) {
                r.feed(chunk, &mut |f| got.push(f));
            }
            assert_eq!(got, want, "reads of {step} bytes");
            assert!(r.is_on() && r.saw_preface());
        }
    }

    #[test]
    fn a_server_reader_needs_no_preface_and_http1_turns_a_client_reader_off() {
        let (bytes, want) = sample();
        let mut r = FrameReader::from_server();
        let mut got = Vec::new();
        r.feed(&bytes[PREFACE.len()..], &mut |f| got.push(f));
        assert_eq!(got, want);
        let mut r = FrameReader::from_client();
        let mut n = 0;
        r.feed(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n\r\n", &mut |_| n += 1);
        r.feed(&bytes, &mut |_| n += 1);
        assert!(!r.is_on());
        assert_eq!(n, 0);
    }
}
