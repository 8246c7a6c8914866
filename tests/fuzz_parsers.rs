//! Property tests ("fuzzing") of everything that parses provider bytes: the SSE parser, the
//! three providers' response parsers and stream decoders, the stream driver, and the error-body
//! classifiers. Inputs are arbitrary bytes and mutations of real responses. Properties: never
//! panic, never hang (every finite body ends within a time bound), typed errors only, and the
//! SSE parser gives the same events however the bytes are split.

use std::sync::Arc;
use std::time::Duration;

use _core::config::{ModelConfig, ProbeMode, ProviderKind, RetryConfig, Timeouts};
use _core::error::ErrorKind;
use _core::provider::classify::{self, ErrCtx};
use _core::provider::sse::{SseEvent, SseParser};
use _core::provider::stream::{drive, Body, StreamDecoder, StreamSetup};
use _core::provider::{anthropic, gemini, openai};
use _core::secret::Secret;
use _core::types::{Params, StreamEvent};
use bytes::Bytes;
use futures_util::StreamExt;
use proptest::prelude::*;
use serde_json::Value;

const KEY: &str = "sk-fuzz-SECRET-0042";

const OPENAI_CHAT: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Hello café","tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;
const ANTHROPIC_CHAT: &str = r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude","content":[{"type":"text","text":"Hello"},{"type":"tool_use","id":"tu_1","name":"f","input":{"a":1}}],"stop_reason":"end_turn","usage":{"input_tokens":3,"output_tokens":2}}"#;
const GEMINI_CHAT: &str = r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"Hello"},{"functionCall":{"name":"f","args":{"a":1}}}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":2,"totalTokenCount":5},"modelVersion":"gemini-1.5","responseId":"r1"}"#;
const ERROR_BODY: &str = r#"{"error":{"message":"Incorrect API key provided: sk-fuzz-SECRET-0042","type":"invalid_request_error","code":"invalid_api_key"}}"#;

const OPENAI_STREAM: &str = "data: {\"id\":\"c1\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hel\"}}]}\n\n\
data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]}}]}\n\n\
data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo caf\u{e9}\"},\"finish_reason\":\"stop\"}]}\n\n\
data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n\n\
data: [DONE]\n\n";
const ANTHROPIC_STREAM: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude\",\"usage\":{\"input_tokens\":3,\"output_tokens\":0}}}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"tu\",\"name\":\"f\"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{}\"}}\n\n\
event: ping\ndata: {\"type\":\"ping\"}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":2}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
const GEMINI_STREAM: &str = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hel\"}]}}],\"modelVersion\":\"g\"}\r\n\r\n\
data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"lo\"},{\"functionCall\":{\"name\":\"f\",\"args\":{}}}]},\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":3,\"candidatesTokenCount\":2,\"totalTokenCount\":5}}\r\n\r\n";

fn model(kind: ProviderKind) -> ModelConfig {
    ModelConfig {
        name: "m".into(),
        provider: "p".into(),
        kind,
        base_url: "http://127.0.0.1:1".into(),
        api_key: Secret::new(KEY),
        model: "m".into(),
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

fn decoder(kind: ProviderKind) -> Box<dyn StreamDecoder> {
    match kind {
        ProviderKind::Anthropic => Box::new(anthropic::Decoder::default()),
        ProviderKind::Gemini => Box::new(gemini::Decoder::default()),
        _ => Box::new(openai::Decoder::default()),
    }
}

const KINDS: [ProviderKind; 3] = [ProviderKind::OpenAi, ProviderKind::Anthropic, ProviderKind::Gemini];

fn sample_chat(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Anthropic => ANTHROPIC_CHAT,
        ProviderKind::Gemini => GEMINI_CHAT,
        _ => OPENAI_CHAT,
    }
}

fn sample_stream(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Anthropic => ANTHROPIC_STREAM,
        ProviderKind::Gemini => GEMINI_STREAM,
        _ => OPENAI_STREAM,
    }
}

/// A mutation of `base`: byte flips, insertions, deletions and truncation.
fn mutated(base: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let n = base.len();
    prop::collection::vec((0..4u8, 0..n.max(1), any::<u8>()), 0..12).prop_map(move |edits| {
        let mut b = base.as_bytes().to_vec();
        for (op, at, byte) in edits {
            if b.is_empty() {
                break;
            }
            let at = at % b.len();
            match op {
                0 => b[at] = byte,
                1 => b.insert(at, byte),
                2 => {
                    b.remove(at);
                }
                _ => b.truncate(at),
            }
        }
        b
    })
}

/// Bytes that look like an event stream more often than uniform noise would.
fn sse_like() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"data: ".to_vec()),
        Just(b"event: ".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b": comment".to_vec()),
        Just(b"[DONE]".to_vec()),
        Just(b"\xEF\xBB\xBF".to_vec()),
        Just(b"{\"choices\":[{\"delta\":{\"content\":\"x\"}}]}".to_vec()),
        prop::collection::vec(any::<u8>(), 0..8),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|v| v.concat())
}

/// Split `bytes` at the given cut points (taken modulo the length).
fn split(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts.iter().map(|c| if bytes.is_empty() { 0 } else { c % (bytes.len() + 1) }).collect();
    points.push(0);
    points.push(bytes.len());
    points.sort_unstable();
    points.dedup();
    points.windows(2).map(|w| bytes[w[0]..w[1]].to_vec()).collect()
}

fn parse_all(chunks: &[Vec<u8>]) -> Result<Vec<SseEvent>, String> {
    let mut p = SseParser::new();
    let mut out = Vec::new();
    for c in chunks {
        p.feed(c, &mut out).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// Feed every SSE event of `bytes` to a fresh decoder of `kind`; all outcomes must be typed.
fn decode_all(kind: ProviderKind, bytes: &[u8]) {
    let secret = Secret::new(KEY);
    let ctx = ErrCtx { label: "p/m", secret: &secret };
    let mut p = SseParser::new();
    let mut events = Vec::new();
    if p.feed(bytes, &mut events).is_err() {
        return;
    }
    let mut d = decoder(kind);
    let mut out = Vec::new();
    for ev in events {
        match d.on_event(ev, &mut out, &ctx) {
            Ok(()) => {}
            Err(_stream::DecodeError::Garbage(msg)) => assert!(!msg.contains(KEY)),
            Err(_stream::DecodeError::Provider(e)) => {
                assert!(!e.to_string().contains(KEY), "{e}");
                break;
            }
        }
    }
    let _ = d.on_eof();
}

use _core::provider::stream as _stream;

/// Bytes → JSON → the provider's response parser, as the non-streaming path does.
fn parse_body(kind: ProviderKind, bytes: &[u8]) {
    let secret = Secret::new(KEY);
    let ctx = ErrCtx { label: "p/m", secret: &secret };
    let Ok(v) = serde_json::from_slice::<Value>(bytes) else { return };
    let res = match kind {
        ProviderKind::Anthropic => anthropic::parse_response(&v, &ctx),
        ProviderKind::Gemini => gemini::parse_response(&v, &ctx),
        _ => openai::parse_response(&v, &ctx),
    };
    if let Err(e) = res {
        assert!(!e.to_string().contains(KEY), "{e}");
        assert_ne!(e.kind, ErrorKind::Config);
    }
}

fn classify_body(status: u16, bytes: &[u8]) {
    let secret = Secret::new(KEY);
    let ctx = ErrCtx { label: "p/m", secret: &secret };
    let e = classify::classify_status(status, &reqwest::header::HeaderMap::new(), bytes, &ctx);
    assert!(!e.to_string().contains(KEY), "{e}");
    assert!(e.to_string().chars().count() < 1000, "error messages stay bounded");
}

/// Run the stream driver over `chunks` (a finite body): it must end, with a typed outcome.
fn drive_body(kind: ProviderKind, chunks: Vec<Vec<u8>>, fail_at_end: bool) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
    rt.block_on(async move {
        let mut items: Vec<Result<Bytes, String>> = chunks.into_iter().map(|c| Ok(Bytes::from(c))).collect();
        if fail_at_end {
            items.push(Err("connection reset".into()));
        }
        let body: Body = Box::pin(futures_util::stream::iter(items));
        let t = Timeouts { connect: None, first_token: Some(Duration::from_secs(2)), total: Some(Duration::from_secs(4)), idle: Some(Duration::from_secs(2)) };
        let setup = StreamSetup { model: Arc::new(model(kind)), label: "p/m".into(), started: tokio::time::Instant::now(), timeouts: t, request_id: None };
        let s = drive(body, decoder(kind), setup);
        let all = tokio::time::timeout(Duration::from_secs(10), s.collect::<Vec<_>>()).await.expect("the stream driver hung on a finite body");
        let mut got_delta = false;
        for (i, item) in all.iter().enumerate() {
            let last = i + 1 == all.len();
            match item {
                Ok(StreamEvent::Delta { .. }) => {
                    assert!(!last, "a stream ended on a delta without Done or an error");
                    got_delta = true;
                }
                Ok(StreamEvent::Done { .. }) => assert!(last, "items after Done"),
                Err(e) => {
                    assert!(last, "items after an error");
                    assert!(!e.to_string().contains(KEY), "{e}");
                    if got_delta && e.kind == ErrorKind::StreamInterrupted {
                        assert!(e.partial.is_some());
                    }
                }
            }
        }
        assert!(!all.is_empty(), "a stream must end with Done or an error, never silently");
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn sse_parser_is_total_and_split_invariant(bytes in prop_oneof![sse_like(), prop::collection::vec(any::<u8>(), 0..512)], cuts in prop::collection::vec(any::<usize>(), 0..16)) {
        let whole = parse_all(std::slice::from_ref(&bytes));
        let pieces = parse_all(&split(&bytes, &cuts));
        // Same events whichever way the bytes arrive (an error may come at a different event).
        if let (Ok(a), Ok(b)) = (&whole, &pieces) {
            prop_assert_eq!(a, b);
        }
        prop_assert_eq!(whole.is_ok(), pieces.is_ok());
    }

    #[test]
    fn response_parsers_survive_arbitrary_and_mutated_bodies(
        kind in prop::sample::select(KINDS.to_vec()),
        noise in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        parse_body(kind, &noise);
    }

    #[test]
    fn response_parsers_survive_mutated_real_responses(m0 in mutated(OPENAI_CHAT), m1 in mutated(ANTHROPIC_CHAT), m2 in mutated(GEMINI_CHAT)) {
        for kind in KINDS {
            parse_body(kind, &m0);
            parse_body(kind, &m1);
            parse_body(kind, &m2);
        }
    }

    #[test]
    fn stream_decoders_survive_arbitrary_and_mutated_events(
        noise in sse_like(),
        m0 in mutated(OPENAI_STREAM), m1 in mutated(ANTHROPIC_STREAM), m2 in mutated(GEMINI_STREAM),
    ) {
        for kind in KINDS {
            decode_all(kind, &noise);
            decode_all(kind, &m0);
            decode_all(kind, &m1);
            decode_all(kind, &m2);
        }
    }

    #[test]
    fn error_classifiers_survive_arbitrary_bodies(status in 100u16..600, noise in prop::collection::vec(any::<u8>(), 0..512), m in mutated(ERROR_BODY)) {
        classify_body(status, &noise);
        classify_body(status, &m);
    }
}

proptest! {
    // The driver spins up a runtime per case: fewer cases.
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn stream_driver_always_ends_typed(
        kind in prop::sample::select(KINDS.to_vec()),
        which in 0..3usize,
        mutation in prop::collection::vec((0..4u8, any::<usize>(), any::<u8>()), 0..8),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
        fail_at_end in any::<bool>(),
    ) {
        let base = sample_stream(KINDS[which]).as_bytes().to_vec();
        let mut b = base;
        for (op, at, byte) in mutation {
            if b.is_empty() { break; }
            let at = at % b.len();
            match op { 0 => b[at] = byte, 1 => b.insert(at, byte), 2 => { b.remove(at); } _ => b.truncate(at) }
        }
        drive_body(kind, split(&b, &cuts), fail_at_end);
    }
}

#[test]
fn unmutated_samples_decode_to_deltas_then_done() {
    for kind in KINDS {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
        let body: Body = Box::pin(futures_util::stream::iter(vec![Ok(Bytes::from_static(sample_stream(kind).as_bytes()))]));
        let setup = StreamSetup {
            model: Arc::new(model(kind)),
            label: "p/m".into(),
            started: tokio::time::Instant::now(),
            timeouts: Timeouts::default(),
            request_id: None,
        };
        let all = rt.block_on(drive(body, decoder(kind), setup).collect::<Vec<_>>());
        assert!(all.iter().any(|i| matches!(i, Ok(StreamEvent::Delta { text, .. }) if !text.is_empty())), "{kind:?}: {all:?}");
        assert!(matches!(all.last(), Some(Ok(StreamEvent::Done { .. }))), "{kind:?}: {all:?}");
        let secret = Secret::new(KEY);
        let ctx = ErrCtx { label: "p/m", secret: &secret };
        let v: Value = serde_json::from_str(sample_chat(kind)).expect("sample JSON");
        let r = match kind {
            ProviderKind::Anthropic => anthropic::parse_response(&v, &ctx),
            ProviderKind::Gemini => gemini::parse_response(&v, &ctx),
            _ => openai::parse_response(&v, &ctx),
        };
        assert!(r.expect("sample parses").content.starts_with("Hello"));
    }
}

/// Arbitrary JSON, nested a few levels, with the keys request builders and schema converters
/// look at turning up often.
fn json_value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("type".to_string()),
        Just("properties".to_string()),
        Just("items".to_string()),
        Just("$ref".to_string()),
        Just("$defs".to_string()),
        Just("anyOf".to_string()),
        Just("enum".to_string()),
        Just("json_schema".to_string()),
        Just("schema".to_string()),
        Just("function".to_string()),
        Just("extra_content".to_string()),
        Just("generationConfig".to_string()),
        "[a-z_]{1,8}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        prop_oneof![Just("object".to_string()), Just("#/$defs/a".to_string()), Just("null".to_string()), ".{0,8}"].prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..6).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Whatever a caller passes (response formats, tools, tool calls, extras, content parts),
    /// building a request for any provider returns a body or a typed refusal, never a panic, and
    /// the schema converters terminate on recursive `$ref`s.
    #[test]
    fn request_builders_survive_arbitrary_parameters(rf in json_value(), tools in json_value(), calls in json_value(), content in json_value(), extra in json_value()) {
        use _core::types::{ChatRequest, Message};
        let mut params = Params { response_format: Some(rf.clone()), tools: Some(tools.clone()), tool_choice: Some(extra.clone()), ..Default::default() };
        if let Value::Object(o) = &extra {
            params.extra = o.clone();
        }
        params.extra.insert("anthropic".into(), extra.clone());
        params.extra.insert("gemini".into(), extra.clone());
        let req = ChatRequest {
            messages: vec![
                Message { role: "user".into(), content: content.clone(), ..Default::default() },
                Message { role: "assistant".into(), content: Value::Null, tool_calls: Some(calls.clone()), ..Default::default() },
                Message { role: "tool".into(), content, tool_call_id: Some("x".into()), ..Default::default() },
            ],
            params: Params::default(),
        };
        for kind in [ProviderKind::OpenAi, ProviderKind::OpenAiCompatible, ProviderKind::Anthropic, ProviderKind::Gemini] {
            for stream in [false, true] {
                if let Ok((body, _)) = _core::provider::request_body(&model(kind), &req, &params, stream) {
                    prop_assert!(serde_json::from_slice::<Value>(&body).is_ok());
                }
            }
        }
        let _ = _core::provider::format::gemini_schema(&rf);
        let _ = _core::provider::format::anthropic_schema(&tools);
    }
}
