//! The HTTP/2 transport over real sockets (h2c to the mock, and a bare h2 server where a test
//! needs exact control of the frames): more streams than the peer allows, the connection cap,
//! GOAWAY mid-run, a connection reset mid-stream failing over through the engine,
//! cancellation resetting the stream and freeing its slot, flow control with slow readers,
//! keep-alive PINGs, idle connections closing, refused streams sent again, and the errors of
//! a connection that cannot be had.

mod provider_util;

mod provider_h2 {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;

    use _core::config::{HttpVersion, ModelConfig, ProviderKind};
    use _core::engine::router::{CallOptions, Engine, Route};
    use _core::error::{ErrorKind, TimeoutKind};
    use _core::mock::{MockConfig, MockServer};
    use _core::provider::transport::{H2Tuning, PoolOptions};
    use _core::provider::{EventStream, HttpPool, ProviderClient};
    use _core::secret::Secret;
    use _core::state::store::MemoryStore;
    use _core::types::{ChatRequest, Message, Params, StreamEvent};
    use futures_util::StreamExt;
    use serde_json::{json, Value};
    use tokio::task::JoinSet;

    use super::provider_util::*;

    const KEY: &str = "sk-test-LEAKCHECK-h2";
    /// Every wait in these tests ends by this bound (a hang fails instead of blocking CI).
    const BOUND: Duration = Duration::from_secs(20);

    async fn mock(h2_max_streams: u32, scripts: Value) -> MockServer {
        let config = MockConfig { h2_max_streams, scripts, ..Default::default() };
        MockServer::start("127.0.0.1:0".parse().expect("addr"), config).await.expect("mock starts")
    }

    fn h2_model(base: &str, wire: &str) -> ModelConfig {
        let mut m = model(ProviderKind::OpenAiCompatible, &format!("{base}/v1"), Secret::new(KEY));
        m.model = wire.into();
        m.http_version = HttpVersion::Http2;
        m
    }

    fn req() -> ChatRequest {
        ChatRequest { messages: vec![Message::text("user", "hello")], params: Params::default() }
    }

    fn num(v: &Value, path: &str) -> u64 {
        v.pointer(path).and_then(Value::as_u64).unwrap_or_else(|| panic!("counter {path} in {v}"))
    }

    /// A counter that is zero until its model has been seen.
    fn seen(v: &Value, path: &str) -> u64 {
        v.pointer(path).and_then(Value::as_u64).unwrap_or(0)
    }

    /// Poll `cond` until it holds; fail the test after [`BOUND`].
    async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
        let t0 = tokio::time::Instant::now();
        while !cond() {
            assert!(t0.elapsed() < BOUND, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn drain(mut s: EventStream) -> (String, bool) {
        let mut text = String::new();
        while let Some(item) = s.next().await {
            match item.expect("stream item") {
                StreamEvent::Delta { text: t, .. } => text.push_str(&t),
                StreamEvent::Done { .. } => return (text, true),
            }
        }
        (text, false)
    }

    /// `n` chats at once, each on its own task.
    async fn chats(c: &ProviderClient, n: usize) -> Vec<Result<_core::types::ChatResponse, _core::error::Error>> {
        let mut set = JoinSet::new();
        for _ in 0..n {
            let c = c.clone();
            set.spawn(async move { c.chat(&req(), &relaxed()).await });
        }
        let mut out = Vec::new();
        while let Some(r) = tokio::time::timeout(BOUND, set.join_next()).await.expect("chats finish") {
            out.push(r.expect("task"));
        }
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn more_requests_than_the_stream_limit_all_complete_on_more_connections() {
        let mock = mock(8, json!({"m": {"latency_ms": 100}})).await;
        let pool = HttpPool::new();
        let c = ProviderClient::new(h2_model(&mock.base_url(), "m"), &pool);
        let rs = chats(&c, 200).await;
        assert!(rs.iter().all(|r| r.as_ref().is_ok_and(|r| r.content.starts_with("Hello from m"))), "{:?}", rs.iter().find(|r| r.is_err()));
        let k = mock.counters();
        assert_eq!(num(&k, "/models/m/requests"), 200, "each request reached the mock exactly once");
        assert_eq!(num(&k, "/http2_requests"), 200);
        assert!(num(&k, "/http2_connections") > 1, "a second connection opened at the limit: {k}");
        assert!(num(&k, "/max_streams_per_connection") <= 8, "the mock's limit was honoured: {k}");
        let status = pool.http2_status();
        assert_eq!(status.len(), 1);
        assert!(status[0].connections.iter().all(|c| c.max_streams == 8 && c.active == 0), "{status:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_the_connection_cap_requests_wait_for_a_free_stream() {
        let mock = mock(4, json!({"m": {"latency_ms": 50}})).await;
        let pool = HttpPool::new();
        let mut m = h2_model(&mock.base_url(), "m");
        m.http2_max_connections = 3;
        let c = ProviderClient::new(m, &pool);
        let rs = chats(&c, 60).await;
        assert!(rs.iter().all(Result::is_ok), "{:?}", rs.iter().find(|r| r.is_err()));
        let k = mock.counters();
        assert_eq!(num(&k, "/http2_connections"), 3, "no more connections than the cap: {k}");
        assert!(num(&k, "/max_streams_per_connection") <= 4, "{k}");
        assert_eq!(num(&k, "/models/m/requests"), 60);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn goaway_mid_run_loses_no_request() {
        // Three connections are told to go away by the script, and then every open one by the
        // test while requests are in flight.
        let steps = json!([{"fault": "ok", "times": 60}, "goaway", {"fault": "ok", "times": 60}, "goaway", {"fault": "ok", "times": 60}, "goaway"]);
        let mock = Arc::new(mock(16, json!({"m": {"latency_ms": 20, "steps": steps, "then": "ok"}})).await);
        let pool = HttpPool::new();
        let c = ProviderClient::new(h2_model(&mock.base_url(), "m"), &pool);
        let gate = Arc::new(tokio::sync::Semaphore::new(100));
        let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut set = JoinSet::new();
        for _ in 0..500 {
            let (c, gate, done, mock) = (c.clone(), gate.clone(), done.clone(), mock.clone());
            set.spawn(async move {
                let _p = gate.acquire().await.expect("gate");
                let r = c.chat(&req(), &relaxed()).await;
                if done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == 250 {
                    assert!(mock.goaway() >= 1, "connections were open");
                }
                r
            });
        }
        let mut ok = 0;
        while let Some(r) = tokio::time::timeout(BOUND, set.join_next()).await.expect("requests finish") {
            let r = r.expect("task");
            assert!(r.is_ok(), "a request was lost to GOAWAY: {:?}", r.err());
            ok += 1;
        }
        assert_eq!(ok, 500);
        let k = mock.counters();
        // Each call was answered exactly once; a request the mock saw beyond that is one hyper
        // cancelled as the GOAWAY arrived (and was sent again).
        let seen = num(&k, "/models/m/requests");
        assert_eq!(seen - num(&k, "/models/m/client_disconnects"), 500, "{k}");
        assert_eq!(num(&k, "/models/m/ok") + num(&k, "/models/m/faults/goaway"), seen, "{k}");
        assert!(num(&k, "/goaways") >= 4, "{k}");
        assert!(num(&k, "/http2_connections") >= 4, "new connections replaced the ones going away: {k}");
    }

    /// The engine over HTTP/2: a connection reset while ten streams are on it fails exactly
    /// those ten, as `ConnectionError`, and each falls over to the next echelon; the other
    /// thirty requests, on other connections, are untouched.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reset_connection_fails_only_its_own_streams_and_they_fail_over() {
        let steps = json!([{"fault": "ok", "times": 39}, {"fault": "reset", "latency_ms": 0}]);
        let mock = mock(10, json!({"m-a": {"latency_ms": 1500, "steps": steps, "then": "ok"}})).await;
        let cfg = json!({
            "providers": {"mock": {
                "common": {"type": "openai_compatible", "base_url": format!("{}/v1", mock.base_url()), "api_key": KEY,
                           "max_retries": 0, "http_version": "2", "timeouts": {"connect": 5, "first_token": 15, "total": 20, "idle": 15}},
                "m-a": {"model": "m-a"}, "m-b": {"model": "m-b"}}},
            "groups": {"g": {
                "echelon1": {"models": ["m-a"], "priority": 1, "concurrency_limit": 100},
                "echelon2": {"models": ["m-b"], "priority": 2, "concurrency_limit": 100},
                "circuit_breaker": {"failure_threshold": 100, "recovery_time": 1, "half_open_requests": 1},
                "fallback_config": {"strategy": "echelon_down", "max_attempts": 3}}}
        });
        let engine = Arc::new(Engine::build(_core::config::from_json(&cfg).expect("config"), Arc::new(MemoryStore::new()), HttpPool::new()));
        let route = Route::parse("group:g").expect("route");
        let call = |engine: Arc<Engine>, route: Route| async move {
            match engine.run(&route, &req(), &CallOptions::default(), false).await {
                Ok(_core::engine::chain::walk::Walked::Chat(r)) => Ok(r),
                Ok(_) => panic!("a stream for a chat"),
                Err(e) => Err(e),
            }
        };
        let mut set = JoinSet::new();
        for _ in 0..39 {
            set.spawn(call(engine.clone(), route.clone()));
        }
        // Four connections of ten streams: 10, 10, 10 and 9 in flight.
        wait_until("39 requests are in flight at the mock", || seen(&mock.counters(), "/models/m-a/in_flight") == 39).await;
        // The fortieth takes the last free stream, and resets that connection.
        set.spawn(call(engine.clone(), route.clone()));
        let mut moved = 0;
        let mut stayed = 0;
        while let Some(r) = tokio::time::timeout(BOUND, set.join_next()).await.expect("calls finish") {
            let r = r.expect("task").expect("every call succeeds");
            match r.attempts.as_slice() {
                [one] => {
                    assert_eq!(one.model, "m-a");
                    stayed += 1;
                }
                [first, second] => {
                    assert_eq!(first.error, Some(ErrorKind::ConnectionError), "{first:?}");
                    assert!(!first.message.as_deref().unwrap_or("").contains(KEY));
                    assert_eq!((second.model.as_str(), second.error), ("m-b", None));
                    moved += 1;
                }
                other => panic!("unexpected attempts {other:?}"),
            }
        }
        assert_eq!((stayed, moved), (30, 10), "exactly the streams of the reset connection failed over");
        let k = mock.counters();
        assert_eq!(num(&k, "/connection_resets"), 1);
        assert_eq!(num(&k, "/models/m-b/requests"), 10);
        assert_eq!(num(&k, "/models/m-a/client_disconnects"), 0, "the mock's own reset is no client disconnect");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancelling_resets_the_stream_and_frees_its_slot() {
        let mock = mock(2, json!({"m": "hang", "s": {"chunks": 40, "chunk_delay_ms": 50}})).await;
        let pool = HttpPool::new();
        let mut m = h2_model(&mock.base_url(), "m");
        m.http2_max_connections = 1;
        let c = ProviderClient::new(m, &pool);
        let mut held = Vec::new();
        for _ in 0..2 {
            let c = c.clone();
            held.push(tokio::spawn(async move { c.chat(&req(), &relaxed()).await }));
        }
        wait_until("both requests are at the mock", || seen(&mock.counters(), "/models/m/in_flight") == 2).await;
        for h in &held {
            h.abort();
        }
        wait_until("the mock saw two RST_STREAM", || num(&mock.counters(), "/rst_streams") == 2).await;
        wait_until("the mock saw both go", || num(&mock.counters(), "/models/m/client_disconnects") == 2).await;
        // One connection of two streams, both free again: a stream, cancelled mid-way, too.
        let mut s_model = h2_model(&mock.base_url(), "s");
        s_model.http2_max_connections = 1;
        let s = ProviderClient::new(s_model, &pool);
        let mut stream = s.stream(&req(), &relaxed()).await.expect("stream opens");
        assert!(matches!(stream.next().await, Some(Ok(StreamEvent::Delta { .. }))));
        drop(stream);
        wait_until("the mock saw the stream reset", || num(&mock.counters(), "/rst_streams") == 3).await;
        mock.set_script("m", _core::mock::Script::default());
        let rs = chats(&c, 2).await;
        assert!(rs.iter().all(Result::is_ok), "{rs:?}");
        let k = mock.counters();
        assert_eq!(num(&k, "/http2_connections"), 1, "every request used the one connection: {k}");
        for o in pool.http2_status() {
            assert!(o.connections.iter().all(|c| c.active == 0), "every slot given back: {o:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_reset_mid_stream_interrupts_the_stream_with_its_text() {
        let mock = mock(100, json!({"slow": {"chunks": 60, "chunk_delay_ms": 30}, "boom": "reset"})).await;
        let pool = HttpPool::new();
        let one_connection = |wire: &str| {
            let mut m = h2_model(&mock.base_url(), wire);
            m.http2_max_connections = 1;
            ProviderClient::new(m, &pool)
        };
        let mut s = one_connection("slow").stream(&req(), &relaxed()).await.expect("stream opens");
        let mut text = String::new();
        for _ in 0..2 {
            match s.next().await {
                Some(Ok(StreamEvent::Delta { text: t, .. })) => text.push_str(&t),
                other => panic!("expected a delta, got {other:?}"),
            }
        }
        // Another request on the same connection resets it.
        let e = one_connection("boom").chat(&req(), &relaxed()).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::ConnectionError, "{}", e.message);
        let e = loop {
            match tokio::time::timeout(BOUND, s.next()).await.expect("the stream ends") {
                Some(Ok(StreamEvent::Delta { text: t, .. })) => text.push_str(&t),
                Some(Ok(StreamEvent::Done { .. })) | None => panic!("the stream outlived its connection"),
                Some(Err(e)) => break e,
            }
        };
        assert_eq!(e.kind, ErrorKind::StreamInterrupted, "{}", e.message);
        assert_eq!(e.partial.as_deref(), Some(text.as_str()), "the text received so far comes with the error");
        assert!(!e.message.contains(KEY));
        assert_eq!(num(&mock.counters(), "/connection_resets"), 1);
        // The pool replaces the connection.
        one_connection("slow").chat(&req(), &relaxed()).await.expect("a new connection");
        assert_eq!(num(&mock.counters(), "/http2_connections"), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn timeouts_and_classification_are_the_same_over_http2() {
        let mock = mock(
            100,
            json!({
                "hang": "hang",
                "stall": {"fault": "stall_after", "after": 2, "chunks": 8},
                "busy": {"fault": "rate_limit", "retry_after": "7"},
            }),
        )
        .await;
        let pool = HttpPool::new();
        let c = |wire: &str| ProviderClient::new(h2_model(&mock.base_url(), wire), &pool);
        let e = c("hang").chat(&req(), &ms(5_000, 300, 10_000, 0)).await.unwrap_err();
        assert_eq!((e.kind, e.timeout), (ErrorKind::Timeout, Some(TimeoutKind::FirstToken)), "{}", e.message);
        let e = c("hang").chat(&req(), &ms(5_000, 0, 300, 0)).await.unwrap_err();
        assert_eq!((e.kind, e.timeout), (ErrorKind::Timeout, Some(TimeoutKind::Total)), "{}", e.message);
        let mut s = c("stall").stream(&req(), &ms(5_000, 5_000, 10_000, 300)).await.expect("stream opens");
        let e = loop {
            match tokio::time::timeout(BOUND, s.next()).await.expect("the stall is noticed") {
                Some(Ok(_)) => continue,
                Some(Err(e)) => break e,
                None => panic!("the stream ended without an error"),
            }
        };
        assert_eq!((e.kind, e.timeout), (ErrorKind::StreamInterrupted, Some(TimeoutKind::Idle)), "{}", e.message);
        drop(s);
        let e = c("busy").chat(&req(), &relaxed()).await.unwrap_err();
        assert_eq!((e.kind, e.status, e.retry_after), (ErrorKind::RateLimited, Some(429), Some(Duration::from_secs(7))));
        assert!(!e.message.contains(KEY));
        // Every timed-out stream was reset and its slot given back.
        wait_until("three streams reset", || num(&mock.counters(), "/rst_streams") == 3).await;
        for o in pool.http2_status() {
            assert!(o.connections.iter().all(|c| c.active == 0), "{o:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slow_readers_do_not_stall_another_stream_on_their_connection() {
        // Three streams of 3 MB each are opened and not read; a paced stream on the same
        // connection must still run to its end. (With a connection window smaller than the
        // unread data, it would stall until the slow readers read.)
        let mock = mock(100, json!({"big": {"content_chars": 3_000_000, "chunks": 300}, "long": {"chunks": 100, "chunk_delay_ms": 3}})).await;
        let pool = HttpPool::new();
        let one_connection = |wire: &str| {
            let mut m = h2_model(&mock.base_url(), wire);
            m.http2_max_connections = 1;
            ProviderClient::new(m, &pool)
        };
        let (big, long) = (one_connection("big"), one_connection("long"));
        let mut slow = Vec::new();
        for _ in 0..3 {
            let mut s = big.stream(&req(), &relaxed()).await.expect("big stream opens");
            assert!(matches!(s.next().await, Some(Ok(StreamEvent::Delta { .. }))));
            slow.push(s);
        }
        let (text, done) = tokio::time::timeout(BOUND, async { drain(long.stream(&req(), &relaxed()).await.expect("long stream opens")).await })
            .await
            .expect("the paced stream was not stalled by the slow readers");
        assert!(done && text.chars().count() == _core::mock::DEFAULT_CONTENT_CHARS, "{done} {}", text.len());
        for s in slow {
            let (_, done) = tokio::time::timeout(BOUND, drain(s)).await.expect("the slow readers finish when they read");
            assert!(done);
        }
        assert_eq!(num(&mock.counters(), "/http2_connections"), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_connections_are_pinged_then_closed() {
        let mock = mock(100, json!({})).await;
        let tuning = H2Tuning { keep_alive_interval: Duration::from_millis(50), ..Default::default() };
        let pool = HttpPool::with_options(PoolOptions { h2: tuning, ..Default::default() });
        let mut m = h2_model(&mock.base_url(), "m");
        m.connection_idle_timeout = Duration::from_millis(1500);
        let c = ProviderClient::new(m, &pool);
        c.chat(&req(), &relaxed()).await.expect("chat");
        wait_until("keep-alive PINGs reach the idle connection", || num(&mock.counters(), "/pings") >= 2).await;
        wait_until("the idle connection closes", || num(&mock.counters(), "/open_connections") == 0).await;
        assert!(pool.http2_status().iter().all(|o| o.connections.is_empty()));
        c.chat(&req(), &relaxed()).await.expect("a new connection serves the next request");
        assert_eq!(num(&mock.counters(), "/http2_connections"), 2);
    }

    /// A bare HTTP/2 server on the h2 crate that refuses the first stream of every connection
    /// with REFUSED_STREAM (the peer did not process it) and answers the others.
    async fn refusing_server() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let r = refused.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = l.accept().await {
                let r = r.clone();
                tokio::spawn(async move {
                    let Ok(mut conn) = h2::server::handshake(tcp).await else { return };
                    let mut first = true;
                    while let Some(Ok((_req, mut respond))) = conn.accept().await {
                        if std::mem::take(&mut first) {
                            r.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            respond.send_reset(h2::Reason::REFUSED_STREAM);
                            continue;
                        }
                        let body = json!({"id": "x", "object": "chat.completion", "model": "m",
                            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "second time"}}],
                            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}})
                        .to_string();
                        let head = hyper::http::Response::builder().status(200).header("content-type", "application/json").body(()).expect("head");
                        if let Ok(mut send) = respond.send_response(head, false) {
                            let _ = send.send_data(bytes::Bytes::from(body), true);
                        }
                    }
                });
            }
        });
        (addr, refused)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_stream_is_sent_again() {
        let (addr, refused) = refusing_server().await;
        let c = ProviderClient::new(h2_model(&format!("http://{addr}"), "m"), &HttpPool::new());
        let r = c.chat(&req(), &relaxed()).await.expect("the refused request is sent again and answered");
        assert_eq!(r.content, "second time");
        assert_eq!(refused.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn connections_that_cannot_be_had_fail_as_connection_errors() {
        let c = ProviderClient::new(h2_model(&format!("http://{}", refused_addr().await), "m"), &HttpPool::new());
        let e = c.chat(&req(), &relaxed()).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::ConnectionError);
        assert!(e.message.to_ascii_lowercase().contains("refused") && !e.message.contains(KEY), "{}", e.message);
        let e = c.stream(&req(), &relaxed()).await.err().expect("stream fails too");
        assert_eq!(e.kind, ErrorKind::ConnectionError);

        let (_l, _fill, addr) = blackhole().await;
        let c = ProviderClient::new(h2_model(&format!("http://{addr}"), "m"), &HttpPool::new());
        let e = c.chat(&req(), &ms(200, 10_000, 20_000, 0)).await.unwrap_err();
        assert_eq!((e.kind, e.timeout), (ErrorKind::Timeout, Some(TimeoutKind::Connect)), "{}", e.message);

        // An HTTP/1.1-only server spoken to with HTTP/2 prior knowledge.
        let srv = Server::start(vec![respond(200, &[], "{}")]).await;
        let c = ProviderClient::new(h2_model(&srv.base(), "m"), &HttpPool::new());
        let e = c.chat(&req(), &relaxed()).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::ConnectionError, "{}", e.message);
    }

    #[tokio::test]
    async fn auto_on_plain_http_speaks_http1() {
        let mock = mock(100, json!({})).await;
        let mut m = h2_model(&mock.base_url(), "m");
        m.http_version = HttpVersion::Auto;
        let pool = HttpPool::new();
        let c = ProviderClient::new(m, &pool);
        c.chat(&req(), &relaxed()).await.expect("chat");
        assert_eq!(num(&mock.counters(), "/http2_requests"), 0);
        assert!(pool.http2_status().is_empty());
    }
}
