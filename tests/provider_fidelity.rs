//! The provider clients against the mock, which refuses what the real APIs refuse: every
//! request shape the clients build is accepted, the answers real providers give (quota,
//! unknown model, bad key, refusals, retry hints, thought signatures, thinking blocks) are read
//! into the right error kind or response field, and what must go back next turn does.

mod provider_util;

mod provider_fidelity {
    use std::net::SocketAddr;
    use std::time::Duration;

    use _core::config::{ModelConfig, ProviderKind, UnsupportedParams};
    use _core::error::{Error, ErrorKind};
    use _core::mock::{MockConfig, MockServer};
    use _core::provider::{EventStream, HttpPool, ProviderClient};
    use _core::secret::Secret;
    use _core::types::{ChatRequest, ChatResponse, Message, Params, StreamEvent};
    use futures_util::StreamExt;
    use serde_json::{json, Value};

    use super::provider_util::{model, relaxed};

    const KINDS: [ProviderKind; 4] = [ProviderKind::OpenAi, ProviderKind::OpenAiCompatible, ProviderKind::Anthropic, ProviderKind::Gemini];

    async fn mock(scripts: Value) -> MockServer {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        MockServer::start(addr, MockConfig { scripts, ..Default::default() }).await.expect("mock starts")
    }

    /// The base URL each provider documents, on the mock.
    fn base(mock: &MockServer, kind: ProviderKind) -> String {
        match kind {
            ProviderKind::OpenAi | ProviderKind::OpenAiCompatible => format!("{}/v1", mock.base_url()),
            ProviderKind::Anthropic => mock.base_url(),
            ProviderKind::Gemini => format!("{}/v1beta", mock.base_url()),
        }
    }

    fn config(mock: &MockServer, kind: ProviderKind, wire: &str) -> ModelConfig {
        let mut m = model(kind, &base(mock, kind), Secret::new("sk-test"));
        m.model = wire.into();
        m
    }

    fn client(mock: &MockServer, kind: ProviderKind, wire: &str) -> ProviderClient {
        ProviderClient::new(config(mock, kind, wire), &HttpPool::new())
    }

    fn user(text: &str) -> ChatRequest {
        ChatRequest { messages: vec![Message::text("user", text)], params: Params::default() }
    }

    async fn drain(mut s: EventStream) -> (String, Vec<StreamEvent>, Option<Error>) {
        let mut text = String::new();
        let mut events = Vec::new();
        while let Some(item) = tokio::time::timeout(Duration::from_secs(10), s.next()).await.expect("stream makes progress") {
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

    /// The calls assembled from a stream's tool-call deltas (OpenAI delta shape), with
    /// `extra_content` kept.
    fn streamed_calls(events: &[StreamEvent]) -> Vec<Value> {
        let mut calls: Vec<Value> = Vec::new();
        for e in events {
            if let StreamEvent::Delta { tool_call: Some(tc), .. } = e {
                let i = tc["index"].as_u64().unwrap_or(0) as usize;
                while calls.len() <= i {
                    calls.push(json!({"type": "function", "function": {"name": "", "arguments": ""}}));
                }
                let c = &mut calls[i];
                if let Some(id) = tc.get("id").and_then(Value::as_str) {
                    c["id"] = json!(id);
                }
                if let Some(x) = tc.get("extra_content") {
                    c["extra_content"] = x.clone();
                }
                for k in ["name", "arguments"] {
                    if let Some(s) = tc.pointer(&format!("/function/{k}")).and_then(Value::as_str) {
                        let cur = c["function"][k].as_str().unwrap_or_default().to_string();
                        c["function"][k] = json!(cur + s);
                    }
                }
            }
        }
        calls
    }

    /// The assistant message a caller sends back: the response's tool calls as the Python
    /// binding hands them out (OpenAI shape plus `extra_content`).
    fn assistant_turn(r: &ChatResponse) -> Message {
        let calls: Vec<Value> = r
            .tool_calls
            .iter()
            .map(|c| {
                let mut v = json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}});
                if let Some(x) = &c.extra_content {
                    v["extra_content"] = x.clone();
                }
                v
            })
            .collect();
        Message { role: "assistant".into(), content: Value::Null, tool_calls: Some(Value::Array(calls)), ..Default::default() }
    }

    fn tool_result(id: &str, text: &str) -> Message {
        Message { role: "tool".into(), content: json!(text), tool_call_id: Some(id.into()), ..Default::default() }
    }

    fn tools() -> Value {
        json!([
            {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": false}}},
            {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
        ])
    }

    /// Every request shape of the matrix is accepted by the mock's per-provider validation, for
    /// every provider, streaming and not.
    #[tokio::test]
    async fn every_request_shape_is_accepted() {
        let mock = mock(json!({})).await;
        let schema = json!({"type": "object", "title": "Report", "properties": {"city": {"type": "string"}, "temp": {"type": ["number", "null"]},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2}}, "required": ["city"], "additionalProperties": false});
        let mut shapes: Vec<(&str, ChatRequest)> = Vec::new();
        shapes.push(("plain", user("hi")));
        let mut sys = user("hi");
        sys.messages.insert(0, Message::text("system", "be brief"));
        shapes.push(("system", sys));
        let mut multi = user("hi");
        multi.messages.extend([Message::text("assistant", "hello"), Message::text("user", "again")]);
        shapes.push(("multi-turn", multi));
        let mut t = user("weather?");
        t.params.tools = Some(tools());
        t.params.tool_choice = Some(json!("auto"));
        shapes.push(("tools", t.clone()));
        let mut named = t.clone();
        named.params.tool_choice = Some(json!({"type": "function", "function": {"name": "get_weather"}}));
        shapes.push(("tool_choice named", named));
        let mut results = t.clone();
        let asst = Message {
            role: "assistant".into(),
            content: Value::Null,
            tool_calls: Some(json!([{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}])),
            ..Default::default()
        };
        // Gemini names a function response (`name`); OpenAI's tool messages have no such key.
        let mut named_result = tool_result("call_2", "noon");
        named_result.name = Some("get_time".into());
        results.messages.extend([asst, tool_result("call_1", "{\"temp\":3}"), named_result]);
        shapes.push(("parallel tool results", results));
        for (name, rf) in [
            ("json mode", json!("json")),
            ("plain schema", schema.clone()),
            ("openai schema", json!({"type": "json_schema", "json_schema": {"name": "report", "schema": schema.clone(), "strict": true}})),
        ] {
            let mut r = user("report");
            r.params.response_format = Some(rf);
            shapes.push((name, r));
        }
        let mut sampling = user("hi");
        sampling.params = Params { temperature: Some(0.2), top_p: Some(0.9), max_tokens: Some(64), stop: vec!["END".into()], ..Default::default() };
        for (k, v) in [
            ("seed", json!(7)),
            ("presence_penalty", json!(0.1)),
            ("user", json!("u-1")),
            ("parallel_tool_calls", json!(false)),
            ("max_completion_tokens", json!(64)),
            ("reasoning_effort", json!("low")),
            ("thinking", json!({"type": "enabled", "budget_tokens": 1024})),
            ("top_k", json!(3)),
            ("safety_settings", json!([])),
            ("anthropic", json!({"service_tier": "auto"})),
            ("gemini", json!({"generationConfig": {"candidateCount": 1}})),
        ] {
            sampling.params.extra.insert(k.into(), v);
        }
        shapes.push(("sampling and extras", sampling));
        let mut images = user("");
        images.messages[0].content = json!([{"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"}}]);
        shapes.push(("images", images));
        for kind in KINDS {
            let c = client(&mock, kind, "shape-model");
            for (name, req) in &shapes {
                // Compatible hosts get every extra as given (each host has its own); the mock
                // speaks OpenAI's own API, which refuses the ones it does not document.
                if kind == ProviderKind::OpenAiCompatible && *name == "sampling and extras" {
                    continue;
                }
                let r = c.chat(req, &relaxed()).await;
                assert!(r.is_ok(), "{kind:?} {name}: {:?}", r.err());
                let s = c.stream(req, &relaxed()).await;
                let (_, events, err) = drain(s.unwrap_or_else(|e| panic!("{kind:?} {name} stream: {e:?}"))).await;
                assert!(err.is_none(), "{kind:?} {name} stream: {err:?}");
                assert!(matches!(events.last(), Some(StreamEvent::Done { .. })), "{kind:?} {name}");
            }
        }
        let c = mock.counters();
        assert_eq!(c["faults"].get("bad_request"), None, "{c}");
    }

    /// What the mock refuses is what the real API refuses: the check really bites.
    #[tokio::test]
    async fn a_request_the_api_would_refuse_is_refused() {
        let mock = mock(json!({})).await;
        // Anthropic rejects unknown fields; a scoped extra sends one anyway.
        let c = client(&mock, ProviderKind::Anthropic, "m");
        let mut r = user("hi");
        r.params.extra.insert("anthropic".into(), json!({"top_p": 0.5}));
        let e = c.chat(&r, &relaxed()).await.unwrap_err();
        assert_eq!((e.kind, e.status), (ErrorKind::BadRequest, Some(400)));
        assert!(e.message.contains("top_p: Extra inputs are not permitted"), "{}", e.message);
        // Gemini: the same for an unknown top-level name.
        let c = client(&mock, ProviderKind::Gemini, "m");
        let mut r = user("hi");
        r.params.extra.insert("gemini".into(), json!({"seed": 1}));
        let e = c.chat(&r, &relaxed()).await.unwrap_err();
        assert!(e.message.contains("Unknown name \"seed\""), "{}", e.message);
    }

    #[tokio::test]
    async fn unsupported_params_drop_by_default_and_error_refuses_before_sending() {
        let mock = mock(json!({})).await;
        let mut r = user("hi");
        r.params.temperature = Some(0.3);
        r.params.extra.insert("seed".into(), json!(1));
        // Dropped: the request goes out without them and succeeds.
        let c = client(&mock, ProviderKind::Anthropic, "drop-model");
        c.chat(&r, &relaxed()).await.expect("dropped, then accepted");
        let body = &mock.counters()["models"]["drop-model"]["last_request"]["body"];
        assert!(body.get("temperature").is_none() && body.get("seed").is_none(), "{body}");
        // Refused: a BadRequest naming key and model, and nothing sent.
        let mut m = config(&mock, ProviderKind::Anthropic, "error-model");
        m.unsupported_params = UnsupportedParams::Error;
        m.name = "claude-logical".into();
        let c = ProviderClient::new(m, &HttpPool::new());
        let e = c.chat(&r, &relaxed()).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadRequest);
        assert!(e.message.contains("`temperature`") && e.message.contains("`seed`") && e.message.contains("claude-logical"), "{}", e.message);
        assert!(c.stream(&r, &relaxed()).await.is_err());
        assert!(mock.counters()["models"].get("error-model").is_none(), "nothing reached the provider");
    }

    /// Account problems are not request problems: quota, unknown model and bad keys get their
    /// own kinds in every provider's wording.
    #[tokio::test]
    async fn quota_unknown_model_and_bad_key_by_provider() {
        let mock = mock(json!({"quota": "quota", "gone": "model_not_found", "badkey": "auth"})).await;
        for kind in KINDS {
            for (model, want) in [("quota", ErrorKind::QuotaExceeded), ("gone", ErrorKind::ModelNotFound), ("badkey", ErrorKind::AuthError)] {
                let c = client(&mock, kind, model);
                let e = c.chat(&user("hi"), &relaxed()).await.unwrap_err();
                assert_eq!(e.kind, want, "{kind:?} {model}: {}", e.message);
                let e = c.stream(&user("hi"), &relaxed()).await.err().expect("error before the stream");
                assert_eq!(e.kind, want, "{kind:?} {model} stream");
            }
        }
    }

    #[tokio::test]
    async fn gemini_retry_info_and_retry_after_become_the_wait_hint() {
        let mock = mock(json!({
            "g": {"fault": "rate_limit", "retry_delay": "7s"},
            "h": {"fault": "rate_limit", "retry_after": "Fri, 31 Dec 9999 23:59:59 GMT"},
            "q": {"fault": "quota", "retry_delay": "30s"}
        }))
        .await;
        let e = client(&mock, ProviderKind::Gemini, "g").chat(&user("hi"), &relaxed()).await.unwrap_err();
        assert_eq!((e.kind, e.retry_after), (ErrorKind::RateLimited, Some(Duration::from_secs(7))));
        let e = client(&mock, ProviderKind::OpenAi, "h").chat(&user("hi"), &relaxed()).await.unwrap_err();
        assert_eq!((e.kind, e.retry_after), (ErrorKind::RateLimited, Some(Duration::from_secs(86_400))));
        // A daily quota is exhausted whatever the retry hint says.
        let e = client(&mock, ProviderKind::Gemini, "q").chat(&user("hi"), &relaxed()).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::QuotaExceeded);
    }

    #[tokio::test]
    async fn anthropic_context_error_with_max_tokens_is_a_context_window_error() {
        let mock = mock(json!({"m": {"max_prompt_tokens": 1000}})).await;
        let c = client(&mock, ProviderKind::Anthropic, "m");
        let mut r = user("short");
        r.params.max_tokens = Some(5000);
        // The mock words a fitting prompt with too large an output as Anthropic does.
        mock.set_scripts(&json!({"m": "context_window"})).unwrap();
        let e = c.chat(&r, &relaxed()).await.unwrap_err();
        assert!(e.message.contains("exceed context limit"), "{}", e.message);
        assert_eq!(e.kind, ErrorKind::ContextWindowExceeded);
    }

    /// A refusal is never an empty success: non-streaming it is `ContentFiltered`; streaming it
    /// ends the stream with `ContentFiltered` carrying the text delivered before it.
    #[tokio::test]
    async fn refusals_are_content_filtered_with_the_text_so_far() {
        let mock = mock(json!({"r": {"fault": "refusal", "after": 2, "chunks": 4}})).await;
        for kind in KINDS {
            let c = client(&mock, kind, "r");
            let e = c.chat(&user("hi"), &relaxed()).await.unwrap_err();
            assert_eq!(e.kind, ErrorKind::ContentFiltered, "{kind:?}: {}", e.message);
            let (text, events, err) = drain(c.stream(&user("hi"), &relaxed()).await.expect("stream opens")).await;
            let e = err.unwrap_or_else(|| panic!("{kind:?}: no error after {events:?}"));
            assert_eq!(e.kind, ErrorKind::ContentFiltered, "{kind:?}");
            assert_eq!(e.partial.as_deref(), Some(text.as_str()), "{kind:?}");
            assert!(!events.iter().any(|e| matches!(e, StreamEvent::Done { .. })), "{kind:?}");
            if !matches!(kind, ProviderKind::OpenAi | ProviderKind::OpenAiCompatible) {
                assert!(!text.is_empty(), "{kind:?}: text came before the refusal");
            }
        }
    }

    /// Gemini 3 refuses a tool turn whose function call comes back without its thought
    /// signature; the signature rides on the tool call and goes back in `extra_content`.
    #[tokio::test]
    async fn gemini_thought_signatures_go_back_with_the_calls() {
        let mock = mock(json!({"g3": {"tool_call": true, "thought_signature": true}})).await;
        let c = client(&mock, ProviderKind::Gemini, "g3");
        let mut r = user("weather in Oslo?");
        r.params.tools = Some(tools());
        let first = c.chat(&r, &relaxed()).await.expect("tool call");
        let sig = first.tool_calls[0].extra_content.clone().expect("signature kept");
        assert!(sig.pointer("/google/thought_signature").and_then(Value::as_str).is_some(), "{sig}");
        let (_, events, err) = drain(c.stream(&r, &relaxed()).await.unwrap()).await;
        assert!(err.is_none());
        assert!(streamed_calls(&events)[0].pointer("/extra_content/google/thought_signature").is_some(), "{events:?}");
        // Sent back with the signature: accepted.
        let mut next = r.clone();
        next.messages.push(assistant_turn(&first));
        next.messages.push(tool_result(&first.tool_calls[0].id, "{\"temp\":3}"));
        c.chat(&next, &relaxed()).await.expect("signature sent back");
        // Without it: refused as the API refuses it.
        let mut bare = next.clone();
        bare.messages[1].tool_calls.as_mut().unwrap()[0].as_object_mut().unwrap().remove("extra_content");
        let e = c.chat(&bare, &relaxed()).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadRequest);
        assert!(e.message.contains("thought_signature"), "{}", e.message);
        let body = &mock.counters()["models"]["g3"]["last_request"]["body"];
        assert!(body["contents"][1]["parts"][0].get("thoughtSignature").is_none());
    }

    /// With extended thinking on, the thinking block that preceded a tool call must open the
    /// assistant turn sent back; it rides on the first call's `extra_content`.
    #[tokio::test]
    async fn anthropic_thinking_blocks_go_back_with_the_calls() {
        let mock = mock(json!({"c": {"tool_call": true}})).await;
        let c = client(&mock, ProviderKind::Anthropic, "c");
        let mut r = user("weather in Oslo?");
        r.params.tools = Some(tools());
        r.params.extra.insert("thinking".into(), json!({"type": "enabled", "budget_tokens": 1024}));
        let first = c.chat(&r, &relaxed()).await.expect("tool call");
        let x = first.tool_calls[0].extra_content.clone().expect("thinking kept");
        assert_eq!(x.pointer("/anthropic/thinking_blocks/0/type"), Some(&json!("thinking")));
        let (_, events, err) = drain(c.stream(&r, &relaxed()).await.unwrap()).await;
        assert!(err.is_none(), "{err:?}");
        let streamed = streamed_calls(&events);
        assert_eq!(
            streamed[0].pointer("/extra_content/anthropic/thinking_blocks/0/signature").and_then(Value::as_str).map(|s| !s.is_empty()),
            Some(true),
            "{streamed:?}"
        );
        let mut next = r.clone();
        next.messages.push(assistant_turn(&first));
        next.messages.push(tool_result(&first.tool_calls[0].id, "3 degrees"));
        c.chat(&next, &relaxed()).await.expect("thinking sent back");
        let mut bare = next.clone();
        bare.messages[1].tool_calls.as_mut().unwrap()[0].as_object_mut().unwrap().remove("extra_content");
        let e = c.chat(&bare, &relaxed()).await.unwrap_err();
        assert!(e.message.contains("thinking block"), "{}", e.message);
        // The same history sent to OpenAI loses what only Anthropic understands.
        let oa = client(&mock, ProviderKind::OpenAi, "o");
        oa.chat(&next, &relaxed()).await.expect("OpenAI gets plain tool calls");
    }

    /// A base URL with or without the version segment reaches the same endpoint.
    #[tokio::test]
    async fn base_urls_with_or_without_the_version_segment() {
        let mock = mock(json!({})).await;
        let root = mock.base_url();
        for (kind, bases) in [
            (ProviderKind::OpenAi, vec![root.clone(), format!("{root}/v1"), format!("{root}/v1/")]),
            (ProviderKind::Anthropic, vec![root.clone(), format!("{root}/v1"), format!("{root}/v1/messages")]),
            (ProviderKind::Gemini, vec![root.clone(), format!("{root}/v1beta"), format!("{root}/")]),
        ] {
            for b in bases {
                let m = model(kind, &b, Secret::new("k"));
                let c = ProviderClient::new(m, &HttpPool::new());
                let r = c.chat(&user("hi"), &relaxed()).await;
                assert!(r.is_ok(), "{kind:?} {b}: {:?}", r.err());
            }
        }
    }

    /// Custom bodies (here an SSE stream) are fed through the mock as a provider would send
    /// them: the usage details of a real Anthropic stream reach the response.
    #[tokio::test]
    async fn custom_streams_through_the_mock() {
        let events = [
            (
                "message_start",
                json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": "claude-x",
                "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 10, "cache_read_input_tokens": 90, "cache_creation_input_tokens": 5, "output_tokens": 1}}}),
            ),
            ("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})),
            ("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}})),
            ("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
            (
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 12, "output_tokens_details": {"thinking_tokens": 4}}}),
            ),
            ("message_stop", json!({"type": "message_stop"})),
        ];
        let sse: String = events.iter().map(|(e, d)| format!("event: {e}\ndata: {d}\n\n")).collect();
        let mock = mock(json!({"s": {"fault": "status", "status": 200, "body": sse, "content_type": "text/event-stream"}})).await;
        let (text, events, err) = drain(client(&mock, ProviderKind::Anthropic, "s").stream(&user("hi"), &relaxed()).await.unwrap()).await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(text, "Hi");
        let Some(StreamEvent::Done { usage: Some(u), .. }) = events.last() else { panic!("{events:?}") };
        assert_eq!((u.prompt_tokens, u.cached_tokens, u.cache_creation_tokens, u.completion_tokens, u.reasoning_tokens), (105, 90, 5, 12, 4));
    }
}
