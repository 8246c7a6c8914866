//! A tiny scripted HTTP/1.1 server on 127.0.0.1 for the provider tests: each accepted
//! connection reads one request, records it, then plays the next script (write bytes, sleep,
//! close, hang). Deliberately dumb so the tests control every byte and every pause.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use _core::config::{ModelConfig, ProbeMode, ProviderKind, RetryConfig, Timeouts};
use _core::secret::Secret;
use _core::types::Params;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;

/// One action of a scripted response.
#[derive(Clone, Debug)]
pub enum Step {
    Write(Vec<u8>),
    Sleep(Duration),
    /// Close the socket now (a cut).
    Close,
    /// Keep the socket open and silent until the server is dropped.
    Hang,
}

/// A request as the server saw it.
#[derive(Clone, Debug, Default)]
pub struct Recorded {
    pub method: String,
    /// Path and query as sent.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    /// Header value by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    /// The body as JSON (panics in tests only).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }
}

/// The running server; dropping it stops it.
pub struct Server {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    /// Serve `scripts`, one per connection in order; the last one repeats when they run out.
    pub async fn start(scripts: Vec<Vec<Step>>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let queue = Arc::new(Mutex::new(VecDeque::from(scripts)));
        let reqs = requests.clone();
        let task = tokio::spawn(async move {
            let mut conns = Vec::new();
            loop {
                let Ok((sock, _)) = listener.accept().await else { return };
                let script = {
                    let mut q = queue.lock().unwrap();
                    if q.len() > 1 {
                        q.pop_front().unwrap_or_default()
                    } else {
                        q.front().cloned().unwrap_or_default()
                    }
                };
                let reqs = reqs.clone();
                // Connection tasks are kept so that aborting the server aborts them (and their
                // sockets) too.
                conns.push(AbortOnDrop(tokio::spawn(serve(sock, script, reqs))));
            }
        });
        Server { addr, requests, task }
    }

    /// `http://127.0.0.1:port`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

struct AbortOnDrop(JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn serve(mut sock: TcpStream, script: Vec<Step>, reqs: Arc<Mutex<Vec<Recorded>>>) {
    let Some(req) = read_request(&mut sock).await else { return };
    reqs.lock().unwrap().push(req);
    for step in script {
        match step {
            Step::Write(b) => {
                if sock.write_all(&b).await.is_err() {
                    return;
                }
                let _ = sock.flush().await;
            }
            Step::Sleep(d) => tokio::time::sleep(d).await,
            Step::Close => return,
            Step::Hang => tokio::time::sleep(Duration::from_secs(3600)).await,
        }
    }
}

async fn read_request(sock: &mut TcpStream) -> Option<Recorded> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let n = sock.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let headers: Vec<(String, String)> = lines.filter_map(|l| l.split_once(':').map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))).collect();
    let len: usize = headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("content-length")).and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = sock.read(&mut tmp).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&tmp[..n]);
    }
    Some(Recorded { method, path, headers, body })
}

fn head(status: u16, headers: &[(&str, &str)]) -> String {
    let mut s = format!("HTTP/1.1 {status} X\r\nconnection: close\r\n");
    for (n, v) in headers {
        s.push_str(&format!("{n}: {v}\r\n"));
    }
    s
}

/// A complete response with a Content-Length body.
pub fn respond(status: u16, headers: &[(&str, &str)], body: &str) -> Vec<Step> {
    let mut s = head(status, headers);
    s.push_str(&format!("content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len()));
    vec![Step::Write(s.into_bytes())]
}

/// Headers claiming `claimed` body bytes, then only `body`, then a close.
pub fn truncated(body: &str, claimed: usize) -> Vec<Step> {
    let mut s = head(200, &[]);
    s.push_str(&format!("content-type: application/json\r\ncontent-length: {claimed}\r\n\r\n{body}"));
    vec![Step::Write(s.into_bytes()), Step::Close]
}

/// 200 event-stream headers; the body is delimited by closing the connection.
pub fn sse_head(headers: &[(&str, &str)]) -> Step {
    let mut s = head(200, headers);
    s.push_str("content-type: text/event-stream\r\n\r\n");
    Step::Write(s.into_bytes())
}

/// 200 event-stream headers with chunked transfer encoding (a close mid-body is an error).
pub fn sse_head_chunked() -> Step {
    let mut s = head(200, &[]);
    s.push_str("content-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n");
    Step::Write(s.into_bytes())
}

/// One chunk of a chunked body.
pub fn chunk(data: &[u8]) -> Step {
    let mut v = format!("{:x}\r\n", data.len()).into_bytes();
    v.extend_from_slice(data);
    v.extend_from_slice(b"\r\n");
    Step::Write(v)
}

/// The terminating chunk.
pub fn last_chunk() -> Step {
    Step::Write(b"0\r\n\r\n".to_vec())
}

/// Raw bytes.
pub fn raw(s: &str) -> Step {
    Step::Write(s.as_bytes().to_vec())
}

/// Pause for `ms` milliseconds.
pub fn sleep(ms: u64) -> Step {
    Step::Sleep(Duration::from_millis(ms))
}

/// An OpenAI `data:` event with one content delta.
pub fn oa_delta(text: &str) -> String {
    format!("data: {}\n\n", serde_json::json!({"id": "c1", "model": "gpt-test", "choices": [{"index": 0, "delta": {"content": text}}]}))
}

/// The OpenAI finish chunk, usage chunk and `[DONE]`.
pub fn oa_end() -> String {
    format!(
        "data: {}\n\ndata: {}\n\ndata: [DONE]\n\n",
        serde_json::json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
        serde_json::json!({"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}})
    )
}

/// An address nothing listens on (bound, then released).
pub async fn refused_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let a = l.local_addr().expect("addr");
    drop(l);
    a
}

/// A listener whose accept queue is full, so further connects hang in SYN retries (a connect
/// timeout on loopback). Keep the returned values alive for the duration of the test.
pub async fn blackhole() -> (TcpListener, Vec<std::net::TcpStream>, SocketAddr) {
    let sock = TcpSocket::new_v4().expect("socket");
    sock.bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let listener = sock.listen(1).expect("listen");
    let addr = listener.local_addr().expect("addr");
    let mut fillers = Vec::new();
    for _ in 0..16 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
            Ok(s) => fillers.push(s),
            Err(_) => break,
        }
    }
    (listener, fillers, addr)
}

/// A model config of `kind` at `base` with `key`.
pub fn model(kind: ProviderKind, base: &str, key: Secret) -> ModelConfig {
    ModelConfig {
        name: "test-model".into(),
        provider: kind.as_str().into(),
        kind,
        base_url: base.into(),
        api_key: key,
        model: "wire-model".into(),
        headers: Default::default(),
        parameters: Params::default(),
        timeouts: Timeouts::default(),
        retry: RetryConfig::default(),
        rpm: 0,
        tpm: 0,
        max_concurrency: 0,
        context_window: 0,
        weight: 1.0,
        rate_limit_cooldown: Duration::ZERO,
        quota_cooldown: _core::config::DEFAULT_QUOTA_COOLDOWN,
        api_version: None,
        probe: ProbeMode::Models,
        http_version: Default::default(),
        http2_max_connections: _core::config::DEFAULT_HTTP2_MAX_CONNECTIONS,
        connection_idle_timeout: _core::config::DEFAULT_CONNECTION_IDLE_TIMEOUT,
        unsupported_params: Default::default(),
        source: None,
    }
}

/// Timeouts in milliseconds (`0` = disabled).
pub fn ms(connect: u64, first_token: u64, total: u64, idle: u64) -> Timeouts {
    let d = |v: u64| (v > 0).then(|| Duration::from_millis(v));
    Timeouts { connect: d(connect), first_token: d(first_token), total: d(total), idle: d(idle) }
}

/// Generous timeouts for tests that are not about timeouts.
pub fn relaxed() -> Timeouts {
    ms(5_000, 10_000, 20_000, 10_000)
}
