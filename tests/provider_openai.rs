//! OpenAI-protocol client over real loopback sockets: success paths, every error class and
//! every timeout kind.

mod provider_util;

mod provider_openai {
    use std::time::{Duration, Instant};

    use _core::config::ProviderKind;
    use _core::error::{Error, ErrorKind, TimeoutKind};
    use _core::provider::{EventStream, HttpPool, ProviderClient};
    use _core::secret::Secret;
    use _core::types::{ChatRequest, Message, Params, StreamEvent, Usage};
    use futures_util::StreamExt;
    use serde_json::json;

    use super::provider_util::*;

    const KEY: &str = "sk-test-LEAKCHECK-123";

    fn client(base: &str) -> ProviderClient {
        ProviderClient::new(model(ProviderKind::OpenAi, base, Secret::new(KEY)), &HttpPool::new())
    }

    fn req() -> ChatRequest {
        ChatRequest { messages: vec![Message::text("system", "sys"), Message::text("user", "hello")], params: Params::default() }
    }

    /// Text, events, and the error that ended the stream (if any). Asserts nothing follows an
    /// error or a Done.
    async fn drain(mut s: EventStream) -> (String, Vec<StreamEvent>, Option<Error>) {
        let mut text = String::new();
        let mut events = Vec::new();
        while let Some(item) = s.next().await {
            assert!(!matches!(events.last(), Some(StreamEvent::Done { .. })), "item after Done");
            match item {
                Ok(ev) => {
                    if let StreamEvent::Delta { text: t, .. } = &ev {
                        text.push_str(t);
                    }
                    events.push(ev);
                }
                Err(e) => {
                    assert!(s.next().await.is_none(), "stream continued after an error");
                    return (text, events, Some(e));
                }
            }
        }
        (text, events, None)
    }

    fn openai_ok_body() -> String {
        json!({"id": "chatcmpl-9", "object": "chat.completion", "model": "gpt-test",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Hi there"}}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}})
        .to_string()
    }

    #[tokio::test]
    async fn chat_success_translates_request_and_response() {
        let srv = Server::start(vec![respond(200, &[("x-request-id", "req-abc")], &openai_ok_body())]).await;
        let mut m = model(ProviderKind::OpenAi, &format!("{}/v1", srv.base()), Secret::new(KEY));
        m.parameters = Params { temperature: Some(0.3), max_tokens: Some(99), ..Default::default() };
        m.headers.insert("x-extra".into(), "yes".into());
        let c = ProviderClient::new(m, &HttpPool::new());
        let mut r = req();
        r.params.max_tokens = Some(5);
        r.params.response_format = Some(json!("json"));
        let resp = c.chat(&r, &relaxed()).await.expect("chat ok");
        assert_eq!(resp.content, "Hi there");
        assert_eq!(resp.model, "gpt-test");
        assert_eq!(resp.finish_reason.as_deref(), Some("stop"));
        assert_eq!(resp.usage, Usage::new(7, 2));
        assert_eq!(resp.request_id.as_deref(), Some("req-abc"));
        let ttft = resp.ttft.expect("ttft set");
        assert!(resp.latency >= ttft);
        assert!(resp.served_by.is_empty() && resp.attempts.is_empty());

        let got = &srv.requests()[0];
        assert_eq!(got.method, "POST");
        assert_eq!(got.path, "/v1/chat/completions");
        assert_eq!(got.header("authorization"), Some(format!("Bearer {KEY}").as_str()));
        assert_eq!(got.header("x-extra"), Some("yes"));
        let body = got.json();
        assert_eq!(body["model"], "wire-model");
        assert_eq!(body["max_completion_tokens"], 5, "caller wins over config default; OpenAI takes max_completion_tokens");
        assert!(body.get("max_tokens").is_none());
        assert_eq!(body["temperature"], 0.3, "config default fills the gap");
        assert_eq!(body["response_format"], json!({"type": "json_object"}));
        assert_eq!(body["messages"][0]["role"], "system");
        assert!(body.get("stream").is_none());
    }

    #[tokio::test]
    async fn stream_success_with_delays_utf8_splits_and_usage() {
        let d1 = oa_delta("caf\u{e9} ");
        let d2 = oa_delta("\u{1F600}");
        // Split the first delta inside "é" and the second inside the emoji.
        let cut1 = d1.find('\u{e9}').unwrap() + 1;
        let cut2 = d2.find('\u{1F600}').unwrap() + 2;
        let script = vec![
            sse_head(&[("x-request-id", "req-s")]),
            Step::Write(d1.as_bytes()[..cut1].to_vec()),
            sleep(20),
            Step::Write(d1.as_bytes()[cut1..].to_vec()),
            raw(": keep-alive\r\n\r\n"),
            Step::Write(d2.as_bytes()[..cut2].to_vec()),
            sleep(20),
            Step::Write(d2.as_bytes()[cut2..].to_vec()),
            raw(&oa_end()),
        ];
        let srv = Server::start(vec![script]).await;
        let s = client(&srv.base()).stream(&req(), &relaxed()).await.expect("stream opens");
        let (text, events, err) = drain(s).await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(text, "caf\u{e9} \u{1F600}");
        assert_eq!(events.iter().filter(|e| matches!(e, StreamEvent::Done { .. })).count(), 1);
        assert_eq!(
            events.last(),
            Some(&StreamEvent::Done {
                finish_reason: Some("stop".into()),
                usage: Some(Usage::new(4, 2)),
                model: Some("gpt-test".into()),
                request_id: Some("req-s".into()),
            })
        );
        let body = srv.requests()[0].json();
        assert_eq!(body["stream"], true);
        assert_eq!(body["stream_options"], json!({"include_usage": true}));
        assert_eq!(srv.requests()[0].header("accept"), Some("text/event-stream"));
    }

    #[tokio::test]
    async fn stream_without_usage_reports_none() {
        let end = format!("data: {}\n\ndata: [DONE]\n\n", json!({"choices": [{"delta": {}, "finish_reason": "length"}]}));
        let srv = Server::start(vec![vec![sse_head(&[]), raw(&oa_delta("x")), raw(&end)]]).await;
        let (_, events, err) = drain(client(&srv.base()).stream(&req(), &relaxed()).await.unwrap()).await;
        assert!(err.is_none());
        assert!(matches!(events.last(), Some(StreamEvent::Done { usage: None, finish_reason: Some(f), .. }) if f == "length"));
    }

    #[tokio::test]
    async fn stream_cut_after_deltas_is_interrupted_with_partial() {
        let srv = Server::start(vec![vec![sse_head(&[]), raw(&oa_delta("one ")), sleep(10), raw(&oa_delta("two")), Step::Close]]).await;
        let (text, events, err) = drain(client(&srv.base()).stream(&req(), &relaxed()).await.unwrap()).await;
        let e = err.expect("a cut stream is never a success");
        assert_eq!(e.kind, ErrorKind::StreamInterrupted);
        assert_eq!(e.partial.as_deref(), Some("one two"));
        assert_eq!(text, "one two");
        assert!(e.timeout.is_none());
        assert!(!events.iter().any(|e| matches!(e, StreamEvent::Done { .. })));
    }

    #[tokio::test]
    async fn stream_cut_inside_chunked_body_is_interrupted() {
        let srv = Server::start(vec![vec![sse_head_chunked(), chunk(oa_delta("part").as_bytes()), sleep(10), Step::Close]]).await;
        let (_, _, err) = drain(client(&srv.base()).stream(&req(), &relaxed()).await.unwrap()).await;
        let e = err.expect("error");
        assert_eq!(e.kind, ErrorKind::StreamInterrupted);
        assert_eq!(e.partial.as_deref(), Some("part"));
    }

    #[tokio::test]
    async fn stream_chunked_success_ends_cleanly() {
        let srv = Server::start(vec![vec![sse_head_chunked(), chunk(oa_delta("a").as_bytes()), chunk(oa_end().as_bytes()), last_chunk()]]).await;
        let (text, events, err) = drain(client(&srv.base()).stream(&req(), &relaxed()).await.unwrap()).await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(text, "a");
        assert!(matches!(events.last(), Some(StreamEvent::Done { .. })));
    }

    #[tokio::test]
    async fn stream_cut_before_first_delta_is_a_plain_error() {
        let srv = Server::start(vec![vec![sse_head(&[]), raw(": hi\n\n"), Step::Close]]).await;
        let (_, events, err) = drain(client(&srv.base()).stream(&req(), &relaxed()).await.unwrap()).await;
        let e = err.expect("error");
        assert!(events.is_empty());
        assert!(matches!(e.kind, ErrorKind::InvalidResponse | ErrorKind::ConnectionError), "{e:?}");
        assert!(e.is_retryable());
    }

    #[tokio::test]
    async fn stream_stall_after_deltas_is_idle_interrupt() {
        let srv = Server::start(vec![vec![sse_head(&[]), raw(&oa_delta("so far")), Step::Hang]]).await;
        let started = Instant::now();
        let s = client(&srv.base()).stream(&req(), &ms(1000, 2000, 10_000, 100)).await.unwrap();
        let (_, _, err) = drain(s).await;
        let e = err.expect("error");
        assert_eq!(e.kind, ErrorKind::StreamInterrupted);
        assert_eq!(e.timeout, Some(TimeoutKind::Idle));
        assert_eq!(e.partial.as_deref(), Some("so far"));
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert!(started.elapsed() < Duration::from_secs(5), "no hang");
    }

    #[tokio::test]
    async fn stream_stall_before_first_delta_is_first_token_timeout() {
        // Keep-alive comments arrive but no delta: the first-token timer still fires.
        let srv = Server::start(vec![vec![sse_head(&[]), raw(": ping\n\n"), sleep(40), raw(": ping\n\n"), Step::Hang]]).await;
        let started = Instant::now();
        let s = client(&srv.base()).stream(&req(), &ms(1000, 150, 10_000, 50)).await.unwrap();
        let (_, _, err) = drain(s).await;
        let e = err.expect("error");
        assert_eq!(e.kind, ErrorKind::Timeout);
        assert_eq!(e.timeout, Some(TimeoutKind::FirstToken));
        assert!(e.partial.is_none());
        assert!(started.elapsed() >= Duration::from_millis(150));
    }

    #[tokio::test]
    async fn stream_total_timeout_after_deltas() {
        let mut script = vec![sse_head(&[])];
        for _ in 0..40 {
            script.push(raw(&oa_delta("x")));
            script.push(sleep(20));
        }
        let srv = Server::start(vec![script]).await;
        let s = client(&srv.base()).stream(&req(), &ms(1000, 1000, 200, 1000)).await.unwrap();
        let (text, _, err) = drain(s).await;
        let e = err.expect("error");
        assert_eq!(e.kind, ErrorKind::StreamInterrupted);
        assert_eq!(e.timeout, Some(TimeoutKind::Total));
        assert_eq!(e.partial.as_deref(), Some(text.as_str()));
        assert!(!text.is_empty());
    }

    #[tokio::test]
    async fn hang_before_headers() {
        let srv = Server::start(vec![vec![Step::Hang]]).await;
        let c = client(&srv.base());
        let e = c.chat(&req(), &ms(1000, 100, 5000, 0)).await.unwrap_err();
        assert_eq!((e.kind, e.timeout), (ErrorKind::Timeout, Some(TimeoutKind::FirstToken)));
        let e = c.stream(&req(), &ms(1000, 100, 5000, 0)).await.err().expect("stream must fail");
        assert_eq!((e.kind, e.timeout), (ErrorKind::Timeout, Some(TimeoutKind::FirstToken)));
        let started = Instant::now();
        let e = c.chat(&req(), &ms(1000, 0, 120, 0)).await.unwrap_err();
        assert_eq!((e.kind, e.timeout), (ErrorKind::Timeout, Some(TimeoutKind::Total)));
        assert!(started.elapsed() >= Duration::from_millis(120));
    }

    #[tokio::test]
    async fn slow_body_hits_total_timeout() {
        let body = openai_ok_body();
        let head = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n", body.len());
        let srv = Server::start(vec![vec![raw(&head), raw(&body[..10]), Step::Hang]]).await;
        let e = client(&srv.base()).chat(&req(), &ms(1000, 1000, 150, 0)).await.unwrap_err();
        assert_eq!((e.kind, e.timeout), (ErrorKind::Timeout, Some(TimeoutKind::Total)));
    }

    #[tokio::test]
    async fn rate_limited_with_retry_after_seconds_and_ms() {
        let body = json!({"error": {"message": "Rate limit reached", "type": "requests"}}).to_string();
        let srv =
            Server::start(vec![respond(429, &[("retry-after", "2"), ("x-request-id", "rl-1")], &body), respond(429, &[("retry-after-ms", "1500")], &body)])
                .await;
        let c = client(&srv.base());
        let e = c.chat(&req(), &relaxed()).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::RateLimited);
        assert_eq!(e.status, Some(429));
        assert_eq!(e.retry_after, Some(Duration::from_secs(2)));
        assert_eq!(e.request_id.as_deref(), Some("rl-1"));
        assert!(e.message.contains("Rate limit reached"), "{}", e.message);
        let e = c.stream(&req(), &relaxed()).await.err().expect("stream 429");
        assert_eq!(e.kind, ErrorKind::RateLimited);
        assert_eq!(e.retry_after, Some(Duration::from_millis(1500)));
    }

    #[tokio::test]
    async fn server_errors_and_overload() {
        let srv = Server::start(vec![
            respond(500, &[], r#"{"error":{"message":"internal"}}"#),
            respond(529, &[], r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#),
            respond(503, &[], r#"{"error":{"message":"The server is overloaded"}}"#),
            respond(400, &[], r#"{"error":{"message":"This model's maximum context length is 10","code":"context_length_exceeded"}}"#),
            respond(401, &[], r#"{"error":{"message":"bad key"}}"#),
            respond(200, &[], r#"{"choices":[{"finish_reason":"content_filter","message":{"content":""}}]}"#),
        ])
        .await;
        let c = client(&srv.base());
        let want = [
            (ErrorKind::ServerError, 500),
            (ErrorKind::Overloaded, 529),
            (ErrorKind::Overloaded, 503),
            (ErrorKind::ContextWindowExceeded, 400),
            (ErrorKind::AuthError, 401),
            (ErrorKind::ContentFiltered, 200),
        ];
        for (kind, status) in want {
            let e = c.chat(&req(), &relaxed()).await.unwrap_err();
            assert_eq!((e.kind, e.status), (kind, Some(status)), "{e}");
        }
    }

    #[tokio::test]
    async fn connection_refused() {
        let addr = refused_addr().await;
        let c = client(&format!("http://{addr}"));
        let e = c.chat(&req(), &relaxed()).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::ConnectionError, "{e}");
        assert!(e.message.to_ascii_lowercase().contains("refused"), "cause shown: {}", e.message);
        let e = c.stream(&req(), &relaxed()).await.err().expect("refused");
        assert_eq!(e.kind, ErrorKind::ConnectionError);
    }

    #[tokio::test]
    async fn connect_timeout() {
        let (_l, _fill, addr) = blackhole().await;
        let started = Instant::now();
        let e = client(&format!("http://{addr}")).chat(&req(), &ms(100, 5000, 10_000, 0)).await.unwrap_err();
        assert_eq!((e.kind, e.timeout), (ErrorKind::Timeout, Some(TimeoutKind::Connect)), "{e}");
        assert!(started.elapsed() >= Duration::from_millis(100));
    }

    #[tokio::test]
    async fn malformed_and_truncated_bodies_are_invalid_response() {
        let body = openai_ok_body();
        let srv = Server::start(vec![respond(200, &[], "{not json"), truncated(&body[..20], body.len())]).await;
        let c = client(&srv.base());
        let e = c.chat(&req(), &relaxed()).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidResponse, "{e}");
        let e = c.chat(&req(), &relaxed()).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidResponse, "{e}");
        assert!(e.message.contains("truncated"), "{}", e.message);
    }

    #[tokio::test]
    async fn garbage_mid_stream_is_interrupted() {
        let srv = Server::start(vec![vec![sse_head(&[]), raw(&oa_delta("ok")), raw("data: {broken\n\n"), raw(&oa_end())]]).await;
        let (_, _, err) = drain(client(&srv.base()).stream(&req(), &relaxed()).await.unwrap()).await;
        let e = err.expect("error");
        assert_eq!(e.kind, ErrorKind::StreamInterrupted);
        assert_eq!(e.partial.as_deref(), Some("ok"));
    }

    #[tokio::test]
    async fn missing_key_variable_fails_without_sending() {
        let srv = Server::start(vec![respond(200, &[], &openai_ok_body())]).await;
        let m = model(ProviderKind::OpenAi, &srv.base(), Secret::from_env("ECHELON_TEST_UNSET_KEY", None));
        let c = ProviderClient::new(m, &HttpPool::new());
        let e = c.chat(&req(), &relaxed()).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::AuthError);
        assert!(e.message.contains("ECHELON_TEST_UNSET_KEY"), "{}", e.message);
        let e = c.stream(&req(), &relaxed()).await.err().expect("stream fails too");
        assert_eq!(e.kind, ErrorKind::AuthError);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(srv.requests().is_empty(), "nothing was sent");
    }

    #[tokio::test]
    async fn bad_base_url_is_a_config_error() {
        let c = client("not a url");
        assert_eq!(c.chat(&req(), &relaxed()).await.unwrap_err().kind, ErrorKind::Config);
    }

    #[tokio::test]
    async fn pool_shares_clients_per_origin_and_connect_timeout() {
        let pool = HttpPool::new();
        let srv = Server::start(vec![respond(200, &[], &openai_ok_body())]).await;
        let a = ProviderClient::new(model(ProviderKind::OpenAi, &format!("{}/v1", srv.base()), Secret::new(KEY)), &pool);
        let b = ProviderClient::new(model(ProviderKind::OpenAiCompatible, &format!("{}/other", srv.base()), Secret::none()), &pool);
        a.chat(&req(), &relaxed()).await.unwrap();
        b.chat(&req(), &relaxed()).await.unwrap();
        assert_eq!(pool.len(), 1);
        b.chat(&req(), &ms(1234, 10_000, 20_000, 0)).await.unwrap();
        assert_eq!(pool.len(), 2);
        assert!(srv.requests()[1].header("authorization").is_none(), "no key, no auth header");
    }
}
