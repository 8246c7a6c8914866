//! Anthropic and Gemini over real loopback sockets, health probes, and the key-leak check.

mod provider_util;

mod provider_protocols {
    use std::time::Duration;

    use _core::config::{ProbeMode, ProviderKind};
    use _core::error::{Error, ErrorKind};
    use _core::provider::{EventStream, HttpPool, ProviderClient};
    use _core::secret::Secret;
    use _core::types::{ChatRequest, Message, Params, StreamEvent, Usage};
    use futures_util::StreamExt;
    use serde_json::json;

    use super::provider_util::*;

    const KEY: &str = "sk-test-LEAKCHECK-123";

    fn client(kind: ProviderKind, base: &str) -> ProviderClient {
        ProviderClient::new(model(kind, base, Secret::new(KEY)), &HttpPool::new())
    }

    fn req() -> ChatRequest {
        ChatRequest { messages: vec![Message::text("system", "sys"), Message::text("user", "hello")], params: Params::default() }
    }

    async fn drain(mut s: EventStream) -> (String, Vec<StreamEvent>, Option<Error>) {
        let mut text = String::new();
        let mut events = Vec::new();
        while let Some(item) = s.next().await {
            match item {
                Ok(ev) => {
                    if let StreamEvent::Delta { text: t, .. } = &ev {
                        text.push_str(t);
                    }
                    events.push(ev);
                }
                Err(e) => return (text, events, Some(e)),
            }
        }
        (text, events, None)
    }

    fn an_event(name: &str, data: serde_json::Value) -> String {
        format!("event: {name}\r\ndata: {data}\r\n\r\n")
    }

    fn an_start() -> String {
        an_event(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_1", "model": "claude-test", "usage": {"input_tokens": 11, "output_tokens": 1}}}),
        )
    }

    fn an_text(t: &str) -> String {
        an_event("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}}))
    }

    #[tokio::test]
    async fn anthropic_chat() {
        let body = json!({"id": "msg_1", "type": "message", "model": "claude-test", "stop_reason": "end_turn",
            "content": [{"type": "text", "text": "Bonjour"}], "usage": {"input_tokens": 5, "output_tokens": 1}});
        let srv = Server::start(vec![respond(200, &[("request-id", "req_an")], &body.to_string())]).await;
        let mut m = model(ProviderKind::Anthropic, &srv.base(), Secret::new(KEY));
        m.api_version = Some("2099-01-01".into());
        let r = ProviderClient::new(m, &HttpPool::new()).chat(&req(), &relaxed()).await.expect("ok");
        assert_eq!(r.content, "Bonjour");
        assert_eq!(r.finish_reason.as_deref(), Some("stop"));
        assert_eq!(r.usage, Usage::new(5, 1));
        assert_eq!(r.request_id.as_deref(), Some("req_an"));
        let got = &srv.requests()[0];
        assert_eq!(got.path, "/v1/messages");
        assert_eq!(got.header("x-api-key"), Some(KEY));
        assert_eq!(got.header("anthropic-version"), Some("2099-01-01"));
        assert!(got.header("authorization").is_none());
        let b = got.json();
        assert_eq!(b["system"], "sys");
        assert_eq!(b["max_tokens"], 1024);
        assert_eq!(b["messages"], json!([{"role": "user", "content": "hello"}]));
    }

    #[tokio::test]
    async fn anthropic_stream_with_tool_use() {
        let script = vec![
            sse_head(&[("request-id", "req_s")]),
            raw(&an_start()),
            raw(&an_event("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}))),
            raw(&an_event("ping", json!({"type": "ping"}))),
            raw(&an_text("Let me ")),
            sleep(15),
            raw(&an_text("check.")),
            raw(&an_event(
                "content_block_start",
                json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "calc", "input": {}}}),
            )),
            raw(&an_event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"x\": 1}"}}),
            )),
            raw(&an_event("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}}))),
            raw(&an_event("message_stop", json!({"type": "message_stop"}))),
        ];
        let srv = Server::start(vec![script]).await;
        let s = client(ProviderKind::Anthropic, &srv.base()).stream(&req(), &relaxed()).await.expect("opens");
        let (text, events, err) = drain(s).await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(text, "Let me check.");
        let tool_deltas: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                StreamEvent::Delta { tool_call: Some(tc), .. } => Some(tc.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(tool_deltas[0]["function"]["name"], "calc");
        assert_eq!(tool_deltas[1]["function"]["arguments"], "{\"x\": 1}");
        assert_eq!(
            events.last(),
            Some(&StreamEvent::Done {
                finish_reason: Some("tool_calls".into()),
                usage: Some(Usage::new(11, 9)),
                model: Some("claude-test".into()),
                request_id: Some("req_s".into()),
            })
        );
        assert_eq!(srv.requests()[0].json()["stream"], true);
    }

    #[tokio::test]
    async fn anthropic_error_event_before_and_after_first_delta() {
        let overloaded = an_event("error", json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}));
        let srv = Server::start(vec![
            vec![sse_head(&[]), raw(&an_start()), raw(&overloaded)],
            vec![sse_head(&[]), raw(&an_start()), raw(&an_text("half")), raw(&overloaded)],
        ])
        .await;
        let c = client(ProviderKind::Anthropic, &srv.base());
        let (_, _, err) = drain(c.stream(&req(), &relaxed()).await.unwrap()).await;
        assert_eq!(err.expect("error").kind, ErrorKind::Overloaded, "before the first delta the class is kept");
        let (_, _, err) = drain(c.stream(&req(), &relaxed()).await.unwrap()).await;
        let e = err.expect("error");
        assert_eq!(e.kind, ErrorKind::StreamInterrupted);
        assert_eq!(e.partial.as_deref(), Some("half"));
        assert!(e.message.contains("Overloaded"), "{}", e.message);
    }

    #[tokio::test]
    async fn anthropic_stream_without_message_stop_is_interrupted() {
        let srv = Server::start(vec![vec![sse_head(&[]), raw(&an_start()), raw(&an_text("abc"))]]).await;
        let (_, events, err) = drain(client(ProviderKind::Anthropic, &srv.base()).stream(&req(), &relaxed()).await.unwrap()).await;
        assert_eq!(err.expect("not a success").kind, ErrorKind::StreamInterrupted);
        assert!(!events.iter().any(|e| matches!(e, StreamEvent::Done { .. })));
    }

    #[tokio::test]
    async fn anthropic_overloaded_529() {
        let srv = Server::start(vec![respond(529, &[], r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#)]).await;
        let e = client(ProviderKind::Anthropic, &srv.base()).chat(&req(), &relaxed()).await.unwrap_err();
        assert_eq!((e.kind, e.status), (ErrorKind::Overloaded, Some(529)));
    }

    fn gem_chunk(v: serde_json::Value) -> String {
        format!("data: {v}\r\n\r\n")
    }

    #[tokio::test]
    async fn gemini_chat_key_in_header_not_url() {
        let body = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hallo"}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1, "totalTokenCount": 4}, "modelVersion": "gemini-test"});
        let srv = Server::start(vec![respond(200, &[], &body.to_string())]).await;
        let mut r = req();
        r.params.response_format = Some(json!("json"));
        r.params.stop = vec!["END".into()];
        let resp = client(ProviderKind::Gemini, &format!("{}/v1beta", srv.base())).chat(&r, &relaxed()).await.expect("ok");
        assert_eq!(resp.content, "Hallo");
        assert_eq!(resp.usage.total_tokens, 4);
        assert_eq!(resp.model, "gemini-test");
        let got = &srv.requests()[0];
        assert_eq!(got.path, "/v1beta/models/wire-model:generateContent");
        assert!(!got.path.contains(KEY) && !got.path.contains("key="));
        assert_eq!(got.header("x-goog-api-key"), Some(KEY));
        let b = got.json();
        assert_eq!(b["systemInstruction"]["parts"][0]["text"], "sys");
        assert_eq!(b["contents"][0]["role"], "user");
        assert_eq!(b["generationConfig"]["responseMimeType"], "application/json");
        assert_eq!(b["generationConfig"]["stopSequences"], json!(["END"]));
    }

    #[tokio::test]
    async fn gemini_stream_and_cut() {
        let c1 = gem_chunk(json!({"candidates": [{"content": {"parts": [{"text": "Gr\u{fc}\u{df} "}]}}], "modelVersion": "gemini-test"}));
        let c2 = gem_chunk(json!({"candidates": [{"content": {"parts": [{"text": "Gott"}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 2, "totalTokenCount": 4}}));
        let cut = c1.find('\u{fc}').unwrap() + 1;
        let srv = Server::start(vec![
            vec![sse_head(&[]), Step::Write(c1.as_bytes()[..cut].to_vec()), sleep(15), Step::Write(c1.as_bytes()[cut..].to_vec()), raw(&c2)],
            vec![sse_head(&[]), raw(&c1)],
        ])
        .await;
        let c = client(ProviderKind::Gemini, &srv.base());
        let (text, events, err) = drain(c.stream(&req(), &relaxed()).await.unwrap()).await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(text, "Gr\u{fc}\u{df} Gott");
        assert!(matches!(events.last(), Some(StreamEvent::Done { finish_reason: Some(f), usage: Some(u), .. }) if f == "stop" && u.total_tokens == 4));
        // A base URL without a version segment gets Gemini's `/v1beta`.
        assert_eq!(srv.requests()[0].path, "/v1beta/models/wire-model:streamGenerateContent?alt=sse");
        // Second connection: no chunk with a finishReason before EOF.
        let (_, _, err) = drain(c.stream(&req(), &relaxed()).await.unwrap()).await;
        let e = err.expect("cut");
        assert_eq!(e.kind, ErrorKind::StreamInterrupted);
        assert_eq!(e.partial.as_deref(), Some("Gr\u{fc}\u{df} "));
    }

    #[tokio::test]
    async fn gemini_safety_block_is_content_filtered() {
        let srv = Server::start(vec![
            respond(200, &[], r#"{"promptFeedback":{"blockReason":"SAFETY"}}"#),
            vec![sse_head(&[]), raw(&gem_chunk(json!({"candidates": [{"finishReason": "SAFETY"}]})))],
        ])
        .await;
        let c = client(ProviderKind::Gemini, &srv.base());
        assert_eq!(c.chat(&req(), &relaxed()).await.unwrap_err().kind, ErrorKind::ContentFiltered);
        let (_, _, err) = drain(c.stream(&req(), &relaxed()).await.unwrap()).await;
        assert_eq!(err.expect("blocked").kind, ErrorKind::ContentFiltered);
    }

    #[tokio::test]
    async fn probes() {
        let srv = Server::start(vec![
            respond(200, &[], r#"{"data":[]}"#),
            respond(200, &[], r#"{"data":[]}"#),
            respond(404, &[], ""),
            respond(503, &[], "down"),
            respond(200, &[], &json!({"choices": [{"finish_reason": "length", "message": {"content": "p"}}]}).to_string()),
            respond(401, &[], r#"{"error":{"message":"nope"}}"#),
        ])
        .await;
        let oa = client(ProviderKind::OpenAi, &format!("{}/v1", srv.base()));
        let an = client(ProviderKind::Anthropic, &srv.base());
        oa.probe(ProbeMode::Models, &relaxed()).await.expect("models ok");
        an.probe(ProbeMode::Models, &relaxed()).await.expect("anthropic models ok");
        oa.probe(ProbeMode::Head, &relaxed()).await.expect("404 on HEAD is alive");
        assert_eq!(oa.probe(ProbeMode::Head, &relaxed()).await.unwrap_err().kind, ErrorKind::ServerError);
        oa.probe(ProbeMode::Completion, &relaxed()).await.expect("completion ok");
        assert_eq!(oa.probe(ProbeMode::Models, &relaxed()).await.unwrap_err().kind, ErrorKind::AuthError);
        let reqs = srv.requests();
        assert_eq!((reqs[0].method.as_str(), reqs[0].path.as_str()), ("GET", "/v1/models"));
        assert_eq!((reqs[1].method.as_str(), reqs[1].path.as_str()), ("GET", "/v1/models"));
        assert_eq!((reqs[2].method.as_str(), reqs[2].path.as_str()), ("HEAD", "/v1"));
        assert_eq!(reqs[4].json()["max_completion_tokens"], 1);
        let refused = client(ProviderKind::Gemini, &format!("http://{}", refused_addr().await));
        assert_eq!(refused.probe(ProbeMode::Models, &relaxed()).await.unwrap_err().kind, ErrorKind::ConnectionError);
    }

    #[tokio::test]
    async fn stream_request_answered_with_json_error_body() {
        let srv = Server::start(vec![respond(200, &[], r#"{"error":{"type":"rate_limit_error","message":"slow down"}}"#), respond(200, &[], "{}")]).await;
        let c = client(ProviderKind::OpenAiCompatible, &srv.base());
        let e = c.stream(&req(), &relaxed()).await.err().expect("error body");
        assert_eq!((e.kind, e.status), (ErrorKind::RateLimited, Some(200)));
        let e = c.stream(&req(), &relaxed()).await.err().expect("not a stream");
        assert_eq!(e.kind, ErrorKind::InvalidResponse);
    }

    /// The key never survives into an error, whatever the server echoes and wherever.
    #[tokio::test]
    async fn key_never_leaks_into_errors() {
        let echo = format!("Incorrect API key provided: {KEY}. You can find your API key at https://x.");
        let json_echo = json!({"error": {"message": echo, "type": "invalid_request_error"}}).to_string();
        let srv = Server::start(vec![
            respond(401, &[], &json_echo),
            respond(400, &[], &json!({"error": {"message": format!("context window exceeded for {KEY}")}}).to_string()),
            respond(429, &[("retry-after", "1")], &echo),
            respond(500, &[], &echo),
            respond(200, &[], &format!("{{ not json {KEY}")),
            respond(200, &[], &json!({"error": {"message": echo}}).to_string()),
            vec![sse_head(&[]), raw(&format!("data: {json_echo}\n\n"))],
            vec![sse_head(&[]), raw(&oa_delta("x")), raw(&format!("data: {json_echo}\n\n"))],
            vec![sse_head(&[]), raw(&oa_delta("x")), raw(&format!("data: {{{KEY}\n\n"))],
        ])
        .await;
        let c = client(ProviderKind::OpenAi, &srv.base());
        let mut errors = Vec::new();
        for _ in 0..6 {
            errors.push(c.chat(&req(), &relaxed()).await.unwrap_err());
        }
        for _ in 0..3 {
            let (_, _, err) = drain(c.stream(&req(), &relaxed()).await.unwrap()).await;
            errors.push(err.expect("stream error"));
        }
        let kinds: Vec<_> = errors.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            vec![
                ErrorKind::AuthError,
                ErrorKind::ContextWindowExceeded,
                ErrorKind::RateLimited,
                ErrorKind::ServerError,
                ErrorKind::InvalidResponse,
                ErrorKind::AuthError,
                ErrorKind::AuthError,
                ErrorKind::StreamInterrupted,
                ErrorKind::StreamInterrupted,
            ]
        );
        for e in &errors {
            let shown = format!("{e} | {e:?} | {} | {:?}", e.message, e.partial);
            assert!(!shown.contains("LEAKCHECK"), "key leaked: {shown}");
            assert!(shown.contains("***") || !e.message.contains("provided"), "redaction marker present: {shown}");
        }
        // Missing-key errors name the variable, never a value.
        let m = model(ProviderKind::Anthropic, &srv.base(), Secret::from_env("ECHELON_LEAK_VAR", None));
        let e = ProviderClient::new(m, &HttpPool::new()).chat(&req(), &relaxed()).await.unwrap_err();
        assert!(format!("{e:?}").contains("ECHELON_LEAK_VAR"));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
