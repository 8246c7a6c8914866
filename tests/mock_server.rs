//! The mock provider server against a real HTTP client (reqwest) on 127.0.0.1.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use _core::mock::{content_text, MockConfig, MockServer, Script};
use _core::secret::Secret;
use serde_json::{json, Value};

/// reqwest's `json` feature is off in this crate; these stand in for it.
trait JsonBody {
    fn json(self, v: &Value) -> Self;
}
impl JsonBody for reqwest::RequestBuilder {
    fn json(self, v: &Value) -> Self {
        self.header("content-type", "application/json").body(v.to_string())
    }
}
trait JsonResponse {
    async fn json<T: serde::de::DeserializeOwned>(self) -> Result<T, String>;
}
impl JsonResponse for reqwest::Response {
    async fn json<T: serde::de::DeserializeOwned>(self) -> Result<T, String> {
        let b = self.bytes().await.map_err(|e| e.to_string())?;
        serde_json::from_slice(&b).map_err(|e| e.to_string())
    }
}

async fn start(scripts: Value) -> MockServer {
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    MockServer::start(addr, MockConfig { scripts, ..Default::default() }).await.unwrap()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

fn openai_req(model: &str, stream: bool) -> Value {
    let mut v = json!({"model": model, "stream": stream,
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there!"}]});
    // OpenAI refuses stream_options on a request that does not stream (and so does the mock).
    if stream {
        v["stream_options"] = json!({"include_usage": true});
    }
    v
}

fn anthropic_req(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "max_tokens": 10, "system": "be brief",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hello there!"}]}]})
}

fn gemini_req() -> Value {
    json!({"contents": [{"role": "user", "parts": [{"text": "hello there!"}]}],
        "systemInstruction": {"parts": [{"text": "be brief"}]}})
}

async fn post(url: &str, body: &Value) -> reqwest::Response {
    client().post(url).json(body).send().await.unwrap()
}

/// SSE events as (event name, data) pairs; accepts LF and CRLF separators.
fn sse_events(text: &str) -> Vec<(Option<String>, String)> {
    let norm = text.replace("\r\n", "\n");
    norm.split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .map(|block| {
            let mut ev = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event: ") {
                    ev = Some(e.to_string());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push_str(d);
                }
            }
            (ev, data)
        })
        .collect()
}

/// Poll the counters until `pred` holds (the mock updates them from its own tasks).
async fn wait_for(mock: &MockServer, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let c = mock.counters();
        if pred(&c) {
            return c;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "timed out waiting for {what}: {c:#}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Tests live in `mod mock` so `cargo test mock` selects them.
mod mock {
    use super::*;

    // ---------------------------------------------------------------------------------------------
    // Wire formats

    #[tokio::test]
    async fn openai_stream_reassembles_to_non_stream_content() {
        let mock = start(json!({"*": {"content_chars": 300, "chunks": 7}})).await;
        let url = format!("{}/v1/chat/completions", mock.base_url());

        let r = post(&url, &openai_req("gpt-x", false)).await;
        assert_eq!(r.status(), 200);
        assert!(r.headers().get("x-request-id").is_some());
        let v: Value = r.json().await.unwrap();
        let content = v["choices"][0]["message"]["content"].as_str().unwrap().to_string();
        assert_eq!(content, content_text("gpt-x", 300));
        assert_eq!(content.chars().count(), 300);
        assert!(content.starts_with("Hello from gpt-x. "));
        assert_eq!(v["model"], "gpt-x");
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(v["choices"][0]["message"]["role"], "assistant");
        // "be brief" + "hello there!" = 20 chars -> 5 tokens.
        assert_eq!(v["usage"]["prompt_tokens"], 5);
        assert_eq!(v["usage"]["completion_tokens"], content.split_whitespace().count() as u64);
        assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));

        let r = post(&url, &openai_req("gpt-x", true)).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        let events = sse_events(&r.text().await.unwrap());
        assert_eq!(events.last().unwrap().1, "[DONE]");
        let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|(_, d)| serde_json::from_str(d).unwrap()).collect();
        let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
        assert_eq!(text, content);
        let deltas = chunks.iter().filter(|c| c["choices"][0]["delta"]["content"].is_string()).count();
        assert_eq!(deltas, 7);
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let fin = chunks.iter().find(|c| c["choices"][0]["finish_reason"].is_string()).unwrap();
        assert_eq!(fin["choices"][0]["finish_reason"], "stop");
        let usage = chunks.last().unwrap();
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["completion_tokens"], v["usage"]["completion_tokens"]);

        // Without include_usage there is no usage chunk.
        let mut req = openai_req("gpt-x", true);
        req.as_object_mut().unwrap().remove("stream_options");
        let events = sse_events(&post(&url, &req).await.text().await.unwrap());
        assert!(events.iter().all(|(_, d)| !d.contains("\"usage\"")));
    }

    #[tokio::test]
    async fn anthropic_stream_and_non_stream() {
        let mock = start(Value::Null).await;
        let url = format!("{}/v1/messages", mock.base_url());
        let r = post(&url, &anthropic_req("claude-x", false)).await;
        assert_eq!(r.status(), 200);
        assert!(r.headers().get("request-id").is_some());
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["type"], "message");
        assert_eq!(v["role"], "assistant");
        assert_eq!(v["stop_reason"], "end_turn");
        assert_eq!(v["model"], "claude-x");
        assert_eq!(v["usage"]["input_tokens"], 5);
        let content = v["content"][0]["text"].as_str().unwrap().to_string();
        assert_eq!(v["content"][0]["type"], "text");
        assert_eq!(content.chars().count(), 200);
        assert_eq!(v["usage"]["output_tokens"], content.split_whitespace().count() as u64);

        let r = post(&url, &anthropic_req("claude-x", true)).await;
        let events = sse_events(&r.text().await.unwrap());
        let names: Vec<&str> = events.iter().map(|(e, _)| e.as_deref().unwrap()).collect();
        assert_eq!(names[..2], ["message_start", "content_block_start"]);
        assert_eq!(names[names.len() - 3..], ["content_block_stop", "message_delta", "message_stop"]);
        assert_eq!(names.iter().filter(|n| **n == "content_block_delta").count(), 8);
        let mut text = String::new();
        for (e, d) in &events {
            let d: Value = serde_json::from_str(d).unwrap();
            assert_eq!(d["type"].as_str(), e.as_deref());
            if e.as_deref() == Some("content_block_delta") {
                assert_eq!(d["delta"]["type"], "text_delta");
                text.push_str(d["delta"]["text"].as_str().unwrap());
            }
            if e.as_deref() == Some("message_delta") {
                assert_eq!(d["delta"]["stop_reason"], "end_turn");
                assert_eq!(d["usage"]["output_tokens"], v["usage"]["output_tokens"]);
            }
        }
        assert_eq!(text, content);
    }

    #[tokio::test]
    async fn gemini_stream_and_non_stream() {
        let mock = start(json!({"gem": {"chunks": 4, "chunk_delay_ms": 2}})).await;
        let base = format!("{}/v1beta/models/gem", mock.base_url());
        let v: Value = post(&format!("{base}:generateContent"), &gemini_req()).await.json().await.unwrap();
        let content = v["candidates"][0]["content"]["parts"][0]["text"].as_str().unwrap().to_string();
        assert_eq!(v["candidates"][0]["content"]["role"], "model");
        assert_eq!(v["candidates"][0]["finishReason"], "STOP");
        assert_eq!(v["usageMetadata"]["promptTokenCount"], 5);
        assert_eq!(content, content_text("gem", 200));

        let r = post(&format!("{base}:streamGenerateContent?alt=sse"), &gemini_req()).await;
        assert_eq!(r.status(), 200);
        let events = sse_events(&r.text().await.unwrap());
        assert_eq!(events.len(), 4);
        let chunks: Vec<Value> = events.iter().map(|(_, d)| serde_json::from_str(d).unwrap()).collect();
        let text: String = chunks.iter().map(|c| c["candidates"][0]["content"]["parts"][0]["text"].as_str().unwrap()).collect();
        assert_eq!(text, content);
        assert!(chunks[..3].iter().all(|c| c["candidates"][0].get("finishReason").is_none()));
        assert_eq!(chunks[3]["candidates"][0]["finishReason"], "STOP");
        assert_eq!(chunks[3]["usageMetadata"]["candidatesTokenCount"], v["usageMetadata"]["candidatesTokenCount"]);
    }

    #[tokio::test]
    async fn paced_stream_carries_same_text_and_utf8_survives_chunking() {
        let mock = start(json!({"*": {"chunk_delay_ms": 3, "ttft_ms": 5, "chunks": 50, "content_chars": 400}})).await;
        let url = format!("{}/v1/chat/completions", mock.base_url());
        let started = Instant::now();
        let mut r = post(&url, &openai_req("m", true)).await;
        let mut raw = Vec::new();
        let mut pieces = 0;
        while let Some(c) = r.chunk().await.unwrap() {
            // Every network chunk is valid UTF-8 on its own: no char straddles two events.
            assert!(std::str::from_utf8(&c).is_ok());
            raw.extend_from_slice(&c);
            pieces += 1;
        }
        assert!(pieces > 1, "a paced stream arrives in several pieces");
        assert!(started.elapsed() >= Duration::from_millis(5 + 3 * 49));
        let events = sse_events(std::str::from_utf8(&raw).unwrap());
        let text: String = events
            .iter()
            .filter(|(_, d)| d != "[DONE]")
            .filter_map(|(_, d)| serde_json::from_str::<Value>(d).unwrap()["choices"][0]["delta"]["content"].as_str().map(String::from))
            .collect();
        assert_eq!(text, content_text("m", 400));
        assert!(!text.is_ascii());
        let c = mock.counters();
        assert_eq!(c["streams_started"], 1);
        assert_eq!(c["streams_completed"], 1);
        assert_eq!(c["client_disconnects"], 0);
    }

    #[tokio::test]
    async fn tool_calls_in_each_format() {
        let mock = start(json!({"*": {"tool_call": true}})).await;
        let b = mock.base_url();
        let mut req = openai_req("m", false);
        req["tools"] = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]);
        let v: Value = post(&format!("{b}/v1/chat/completions"), &req).await.json().await.unwrap();
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(v["choices"][0]["message"]["tool_calls"][0]["function"]["name"], "get_weather");
        assert_eq!(v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"], "{}");
        req["stream"] = json!(true);
        let events = sse_events(&post(&format!("{b}/v1/chat/completions"), &req).await.text().await.unwrap());
        let body: String = events.iter().map(|(_, d)| d.clone()).collect();
        assert!(body.contains("get_weather") && body.contains("\"tool_calls\"") && body.ends_with("[DONE]"));

        let mut req = anthropic_req("m", false);
        req["tools"] = json!([{"name": "lookup", "input_schema": {"type": "object"}}]);
        let v: Value = post(&format!("{b}/v1/messages"), &req).await.json().await.unwrap();
        assert_eq!(v["stop_reason"], "tool_use");
        assert_eq!(v["content"][0]["type"], "tool_use");
        assert_eq!(v["content"][0]["name"], "lookup");
        assert_eq!(v["content"][0]["input"], json!({}));
        req["stream"] = json!(true);
        let events = sse_events(&post(&format!("{b}/v1/messages"), &req).await.text().await.unwrap());
        assert!(events.iter().any(|(_, d)| d.contains("input_json_delta")));
        assert_eq!(events.last().unwrap().0.as_deref(), Some("message_stop"));

        let mut req = gemini_req();
        req["tools"] = json!([{"functionDeclarations": [{"name": "search"}]}]);
        let v: Value = post(&format!("{b}/v1beta/models/g:generateContent"), &req).await.json().await.unwrap();
        assert_eq!(v["candidates"][0]["content"]["parts"][0]["functionCall"]["name"], "search");

        // Without tools in the request, the same script answers with text.
        let v: Value = post(&format!("{b}/v1/chat/completions"), &openai_req("m", false)).await.json().await.unwrap();
        assert!(v["choices"][0]["message"]["content"].is_string());
    }

    // ---------------------------------------------------------------------------------------------
    // Faults

    #[tokio::test]
    async fn error_faults_have_provider_shapes() {
        let mock = start(json!({
            "rl": {"fault": "rate_limit", "retry_after": "2", "retry_after_ms": 1500},
            "se": {"fault": "server_error", "status": 503},
            "ov": "overloaded",
            "au": "auth",
            "cw": "context_window",
            "cf": "content_filter",
            "st": {"fault": "status", "status": 418, "body": {"custom": true}, "retry_after": "Wed, 21 Oct 2015 07:28:00 GMT"}
        }))
        .await;
        let b = mock.base_url();
        let oa = |m: &str| (format!("{b}/v1/chat/completions"), openai_req(m, false));
        let an = |m: &str| (format!("{b}/v1/messages"), anthropic_req(m, false));
        let ge = |m: &str| (format!("{b}/v1beta/models/{m}:generateContent"), gemini_req());

        let (u, q) = oa("rl");
        let r = post(&u, &q).await;
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "2");
        assert_eq!(r.headers()["retry-after-ms"], "1500");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "rate_limit_exceeded");
        let (u, q) = an("rl");
        let v: Value = post(&u, &q).await.json().await.unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "rate_limit_error");
        let (u, q) = ge("rl");
        let v: Value = post(&u, &q).await.json().await.unwrap();
        assert_eq!(v["error"]["status"], "RESOURCE_EXHAUSTED");
        assert_eq!(v["error"]["code"], 429);

        let (u, q) = oa("se");
        let r = post(&u, &q).await;
        assert_eq!(r.status(), 503);
        assert_eq!(r.json::<Value>().await.unwrap()["error"]["type"], "server_error");
        let (u, q) = ge("se");
        assert_eq!(post(&u, &q).await.json::<Value>().await.unwrap()["error"]["status"], "UNAVAILABLE");

        let (u, q) = an("ov");
        let r = post(&u, &q).await;
        assert_eq!(r.status(), 529);
        assert_eq!(r.json::<Value>().await.unwrap()["error"]["type"], "overloaded_error");
        let (u, q) = oa("ov");
        let r = post(&u, &q).await;
        assert_eq!(r.status(), 503);
        assert!(r.text().await.unwrap().contains("overloaded"));

        let (u, q) = oa("au");
        let r = post(&u, &q).await;
        assert_eq!(r.status(), 401);
        assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "invalid_api_key");
        let (u, q) = an("au");
        assert_eq!(post(&u, &q).await.json::<Value>().await.unwrap()["error"]["type"], "authentication_error");

        let (u, q) = oa("cw");
        let r = post(&u, &q).await;
        assert_eq!(r.status(), 400);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "context_length_exceeded");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(v["error"]["message"].as_str().unwrap().starts_with("This model's maximum context length is 8192 tokens"));
        let (u, q) = an("cw");
        let v: Value = post(&u, &q).await.json().await.unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        // The prompt fits the window, only not with the output asked for.
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.starts_with("input length and `max_tokens` exceed context limit: "), "{msg}");
        let (u, q) = ge("cw");
        let v: Value = post(&u, &q).await.json().await.unwrap();
        assert_eq!(v["error"]["status"], "INVALID_ARGUMENT");
        assert!(v["error"]["message"].as_str().unwrap().starts_with("The input token count (5) exceeds the maximum number of tokens allowed"));

        let (u, q) = oa("cf");
        let r = post(&u, &q).await;
        assert_eq!(r.status(), 400);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "content_filter");
        assert!(v["error"]["message"].as_str().unwrap().contains("content management policy"));
        let (u, q) = an("cf");
        assert_eq!(post(&u, &q).await.status(), 400);
        let (u, q) = ge("cf");
        let r = post(&u, &q).await;
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["promptFeedback"]["blockReason"], "SAFETY");
        assert_eq!(v["candidates"][0]["finishReason"], "SAFETY");

        let (u, q) = oa("st");
        let r = post(&u, &q).await;
        assert_eq!(r.status(), 418);
        assert_eq!(r.headers()["retry-after"], "Wed, 21 Oct 2015 07:28:00 GMT");
        assert_eq!(r.json::<Value>().await.unwrap(), json!({"custom": true}));

        // Streaming requests get the same errors before any stream starts.
        let r = post(&format!("{b}/v1/chat/completions"), &openai_req("se", true)).await;
        assert_eq!(r.status(), 503);

        let c = mock.counters();
        assert_eq!(c["models"]["rl"]["faults"]["rate_limit"], 3);
        assert_eq!(c["models"]["se"]["statuses"]["503"], 3);
        assert_eq!(c["models"]["ov"]["statuses"]["529"], 1);
        assert_eq!(c["streams_started"], 0);
    }

    #[tokio::test]
    async fn hang_lasts_until_client_gives_up_and_disconnect_is_counted() {
        let mock = start(json!({"h": "hang"})).await;
        let c = reqwest::Client::builder().no_proxy().timeout(Duration::from_millis(200)).build().unwrap();
        let started = Instant::now();
        let err = c.post(format!("{}/v1/chat/completions", mock.base_url())).json(&openai_req("h", false)).send().await.unwrap_err();
        assert!(err.is_timeout(), "{err:?}");
        assert!(started.elapsed() >= Duration::from_millis(200));
        let c = wait_for(&mock, "the disconnect", |c| c["models"]["h"]["client_disconnects"] == 1).await;
        assert_eq!(c["models"]["h"]["faults"]["hang"], 1);
        assert_eq!(c["in_flight"], 0);
    }

    #[tokio::test]
    async fn disconnect_during_latency_is_counted() {
        let mock = start(json!({"slow": {"latency_ms": 5000}})).await;
        let c = reqwest::Client::builder().no_proxy().timeout(Duration::from_millis(100)).build().unwrap();
        let url = format!("{}/v1/messages", mock.base_url());
        assert!(c.post(url).json(&anthropic_req("slow", false)).send().await.unwrap_err().is_timeout());
        wait_for(&mock, "the disconnect", |c| c["client_disconnects"] == 1 && c["in_flight"] == 0).await;
    }

    #[tokio::test]
    async fn reset_closes_without_answer() {
        let mock = start(json!({"r": "reset"})).await;
        let err = client().post(format!("{}/v1/chat/completions", mock.base_url())).json(&openai_req("r", false)).send().await.unwrap_err();
        assert!(err.status().is_none());
        assert!(!err.is_timeout());
        let c = mock.counters();
        assert_eq!(c["models"]["r"]["faults"]["reset"], 1);
        assert_eq!(c["client_disconnects"], 0);
        // The server keeps serving other connections.
        assert_eq!(post(&format!("{}/v1/chat/completions", mock.base_url()), &openai_req("ok", false)).await.status(), 200);
    }

    #[tokio::test]
    async fn cut_after_stream_and_non_stream() {
        let mock = start(json!({"c": {"fault": "cut_after", "after": 3, "chunks": 8}})).await;
        let mut r = post(&format!("{}/v1/chat/completions", mock.base_url()), &openai_req("c", true)).await;
        assert_eq!(r.status(), 200);
        let mut raw = Vec::new();
        let err = loop {
            match r.chunk().await {
                Ok(Some(c)) => raw.extend_from_slice(&c),
                Ok(None) => panic!("stream ended cleanly; expected a cut"),
                Err(e) => break e,
            }
        };
        assert!(err.is_body() || err.is_decode(), "{err:?}");
        let text = String::from_utf8(raw).unwrap();
        let events = sse_events(&text);
        assert_eq!(events.len(), 3);
        assert!(!text.contains("[DONE]"));
        let full = content_text("c", 200);
        let got: String =
            events.iter().map(|(_, d)| serde_json::from_str::<Value>(d).unwrap()["choices"][0]["delta"]["content"].as_str().unwrap().to_string()).collect();
        assert!(full.starts_with(&got) && got.len() < full.len());

        // Anthropic: preamble + 3 deltas, never message_stop.
        let mut r = post(&format!("{}/v1/messages", mock.base_url()), &anthropic_req("c", true)).await;
        let mut raw = Vec::new();
        while let Ok(Some(c)) = r.chunk().await {
            raw.extend_from_slice(&c);
        }
        let events = sse_events(std::str::from_utf8(&raw).unwrap());
        assert_eq!(events.iter().filter(|(e, _)| e.as_deref() == Some("content_block_delta")).count(), 3);
        assert!(events.iter().all(|(e, _)| e.as_deref() != Some("message_stop")));

        // Non-stream: Content-Length promises more than arrives.
        let r = post(&format!("{}/v1beta/models/c:generateContent", mock.base_url()), &gemini_req()).await;
        assert_eq!(r.status(), 200);
        let announced = r.content_length().unwrap();
        assert!(announced > 0);
        assert!(r.bytes().await.is_err());
        let c = mock.counters();
        assert_eq!(c["models"]["c"]["faults"]["cut_after"], 3);
        assert_eq!(c["streams_started"], 2);
        assert_eq!(c["streams_completed"], 0);
    }

    #[tokio::test]
    async fn stall_after_goes_silent_until_client_leaves() {
        let mock = start(json!({"s": {"fault": "stall_after", "after": 2, "chunks": 5}})).await;
        let base = mock.base_url();
        let mut r = post(&format!("{base}/v1beta/models/s:streamGenerateContent?alt=sse"), &gemini_req()).await;
        let mut raw = Vec::new();
        while sse_events(std::str::from_utf8(&raw).unwrap()).len() < 2 {
            let c = tokio::time::timeout(Duration::from_secs(5), r.chunk()).await.unwrap().unwrap().unwrap();
            raw.extend_from_slice(&c);
        }
        // Nothing more comes.
        assert!(tokio::time::timeout(Duration::from_millis(150), r.chunk()).await.is_err());
        assert_eq!(mock.counters()["models"]["s"]["in_flight"], 1);
        drop(r);
        let c = wait_for(&mock, "the disconnect", |c| c["models"]["s"]["client_disconnects"] == 1).await;
        assert_eq!(c["models"]["s"]["faults"]["stall_after"], 1);
        assert_eq!(c["models"]["s"]["in_flight"], 0);
        assert_eq!(c["models"]["s"]["streams_completed"], 0);
    }

    #[tokio::test]
    async fn client_cancel_mid_stream_is_a_disconnect() {
        let mock = start(json!({"p": {"chunk_delay_ms": 20, "chunks": 50}})).await;
        let mut r = post(&format!("{}/v1/chat/completions", mock.base_url()), &openai_req("p", true)).await;
        let _first = r.chunk().await.unwrap().unwrap();
        drop(r);
        let c = wait_for(&mock, "the disconnect", |c| c["client_disconnects"] == 1).await;
        assert_eq!(c["streams_started"], 1);
        assert_eq!(c["streams_completed"], 0);
    }

    #[tokio::test]
    async fn malformed_bodies_and_events() {
        let mock = start(json!({"bad": "malformed", "bad2": {"fault": "malformed", "after": 2}})).await;
        let b = mock.base_url();
        let r = post(&format!("{b}/v1/chat/completions"), &openai_req("bad", false)).await;
        assert_eq!(r.status(), 200);
        assert!(serde_json::from_str::<Value>(&r.text().await.unwrap()).is_err());
        let r = post(&format!("{b}/v1/messages"), &anthropic_req("bad2", true)).await;
        assert_eq!(r.status(), 200);
        let events = sse_events(&r.text().await.unwrap());
        let deltas: Vec<_> = events.iter().filter(|(e, _)| e.as_deref() == Some("content_block_delta")).collect();
        assert_eq!(deltas.len(), 3);
        assert!(serde_json::from_str::<Value>(&deltas[1].1).is_ok());
        assert!(serde_json::from_str::<Value>(&deltas[2].1).is_err());
    }

    // ---------------------------------------------------------------------------------------------
    // Scripts

    #[tokio::test]
    async fn steps_are_consumed_in_order_then_then() {
        let mock = start(json!({"m": {
            "steps": [{"fault": "server_error", "status": 503, "times": 3}, {"fault": "rate_limit", "retry_after": "1"}],
            "then": "ok"
        }}))
        .await;
        let url = format!("{}/v1/chat/completions", mock.base_url());
        let mut got = Vec::new();
        for _ in 0..6 {
            got.push(post(&url, &openai_req("m", false)).await.status().as_u16());
        }
        assert_eq!(got, [503, 503, 503, 429, 200, 200]);
        // Another model is not affected by m's steps, and the "*" default is ok.
        assert_eq!(post(&url, &openai_req("other", false)).await.status(), 200);
        // Reset restarts the steps.
        mock.reset();
        assert_eq!(post(&url, &openai_req("m", false)).await.status(), 503);
        assert_eq!(mock.counters()["models"]["m"]["requests"], 1);
    }

    #[tokio::test]
    async fn default_script_steps_count_per_model() {
        let mock = start(json!({"*": {"steps": ["server_error"]}})).await;
        let url = format!("{}/v1/chat/completions", mock.base_url());
        assert_eq!(post(&url, &openai_req("a", false)).await.status(), 500);
        assert_eq!(post(&url, &openai_req("b", false)).await.status(), 500);
        assert_eq!(post(&url, &openai_req("a", false)).await.status(), 200);
    }

    #[tokio::test]
    async fn script_change_takes_effect_on_next_request() {
        let mock = start(Value::Null).await;
        let url = format!("{}/v1/chat/completions", mock.base_url());
        assert_eq!(post(&url, &openai_req("m", false)).await.status(), 200);
        mock.set_script("m", Script::from_json(&json!("rate_limit")).unwrap());
        assert_eq!(post(&url, &openai_req("m", false)).await.status(), 429);
        mock.set_scripts(&json!({"m": {"content_chars": 40}})).unwrap();
        let v: Value = post(&url, &openai_req("m", false)).await.json().await.unwrap();
        assert_eq!(v["choices"][0]["message"]["content"].as_str().unwrap().chars().count(), 40);
        // A bad script changes nothing and says where the problem is.
        let err = mock.set_scripts(&json!({"m": "hang", "n": {"fault": "nope"}})).unwrap_err();
        assert!(err.contains("scripts.n.fault"), "{err}");
        assert_eq!(post(&url, &openai_req("m", false)).await.status(), 200);
        mock.clear_scripts();
        let v: Value = post(&url, &openai_req("m", false)).await.json().await.unwrap();
        assert_eq!(v["choices"][0]["message"]["content"].as_str().unwrap().chars().count(), 200);
    }

    #[tokio::test]
    async fn max_prompt_tokens_threshold() {
        let mock = start(json!({"small": {"max_prompt_tokens": 10}, "big": {"max_prompt_tokens": 100000}})).await;
        let b = mock.base_url();
        let long = "word ".repeat(40); // 200 chars -> 50 tokens
        let req = |m: &str, text: &str| json!({"model": m, "messages": [{"role": "user", "content": text}]});
        assert_eq!(post(&format!("{b}/v1/chat/completions"), &req("small", "short")).await.status(), 200);
        let r = post(&format!("{b}/v1/chat/completions"), &req("small", &long)).await;
        assert_eq!(r.status(), 400);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "context_length_exceeded");
        assert!(v["error"]["message"].as_str().unwrap().contains("maximum context length is 10 tokens"));
        assert!(v["error"]["message"].as_str().unwrap().contains("resulted in 50 tokens"));
        assert_eq!(post(&format!("{b}/v1/chat/completions"), &req("big", &long)).await.status(), 200);
        let mut an = req("small", &long);
        an["max_tokens"] = json!(5);
        let v: Value = post(&format!("{b}/v1/messages"), &an).await.json().await.unwrap();
        assert_eq!(v["error"]["message"], "prompt is too long: 50 tokens > 10 maximum");
    }

    // ---------------------------------------------------------------------------------------------
    // Counters, probes, auth, control plane, lifecycle

    #[tokio::test]
    async fn counters_track_requests_streams_and_last_request() {
        let mock = start(json!({"slow": {"latency_ms": 300}})).await;
        let b = mock.base_url();
        let url = format!("{b}/v1/chat/completions");
        let c = client();
        let send = |m: &'static str| c.post(&url).header("authorization", "Bearer sk-secret-123").header("x-custom", "yes").json(&openai_req(m, false)).send();
        let (a, b2, c3) = tokio::join!(send("slow"), send("slow"), send("slow"));
        for r in [a, b2, c3] {
            assert_eq!(r.unwrap().status(), 200);
        }
        post(&url, &openai_req("fast", true)).await.text().await.unwrap();
        let c = mock.counters();
        assert_eq!(c["requests"], 4);
        assert_eq!(c["ok"], 4);
        assert_eq!(c["statuses"]["200"], 4);
        assert_eq!(c["streams_started"], 1);
        assert_eq!(c["streams_completed"], 1);
        assert_eq!(c["in_flight"], 0);
        let slow = &c["models"]["slow"];
        assert_eq!(slow["requests"], 3);
        assert!(slow["max_in_flight"].as_u64().unwrap() >= 2, "{slow:#}");
        let last = &slow["last_request"];
        assert_eq!(last["body"]["model"], "slow");
        assert_eq!(last["headers"]["x-custom"], "yes");
        assert!(last["headers"].get("authorization").is_none());
        assert!(!c.to_string().contains("sk-secret-123"));
        assert_eq!(c["models"]["fast"]["last_request"]["body"]["stream"], true);
        mock.reset();
        let c = mock.counters();
        assert_eq!(c["requests"], 0);
        assert_eq!(c["models"]["slow"]["requests"], 0);
        assert!(c["models"]["slow"]["last_request"]["body"].is_null());
    }

    #[tokio::test]
    async fn probes_are_counted_and_obey_health_scripts() {
        let mock = start(json!({
            "down": {"health": {"fault": "server_error", "status": 503}},
            "flaky": {"health": {"steps": [{"fault": "server_error", "status": 503, "times": 2}]}}
        }))
        .await;
        let b = mock.base_url();
        let c = client();
        assert_eq!(c.get(format!("{b}/v1/models")).send().await.unwrap().status(), 200);
        assert_eq!(c.get(format!("{b}/v1beta/models")).send().await.unwrap().status(), 200);
        assert_eq!(c.head(format!("{b}/")).send().await.unwrap().status(), 200);
        assert_eq!(c.get(format!("{b}/health")).send().await.unwrap().status(), 200);
        let list: Value = c.get(format!("{b}/v1/models")).send().await.unwrap().json().await.unwrap();
        assert!(list["data"].as_array().unwrap().iter().any(|m| m["id"] == "down"));
        assert_eq!(c.get(format!("{b}/v1/models/down")).send().await.unwrap().status(), 503);
        assert_eq!(c.get(format!("{b}/v1beta/models/ok-model")).send().await.unwrap().status(), 200);
        let flaky: Vec<u16> = {
            let mut v = Vec::new();
            for _ in 0..3 {
                v.push(c.get(format!("{b}/v1/models/flaky")).send().await.unwrap().status().as_u16());
            }
            v
        };
        assert_eq!(flaky, [503, 503, 200]);
        let counters = mock.counters();
        assert_eq!(counters["probes"], 10);
        assert_eq!(counters["models"]["down"]["probes"], 1);
        assert_eq!(counters["models"]["flaky"]["probes"], 3);
        assert_eq!(counters["requests"], 0);

        // Server-wide health: down by reset.
        mock.set_scripts(&json!({"_health": "reset"})).unwrap();
        assert!(c.head(format!("{b}/")).send().await.is_err());
        assert!(c.get(format!("{b}/v1/models")).send().await.is_err());
        // Chat is unaffected.
        assert_eq!(post(&format!("{b}/v1/chat/completions"), &openai_req("x", false)).await.status(), 200);
    }

    #[tokio::test]
    async fn require_key_rejects_other_keys_in_provider_shape() {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let cfg = MockConfig { require_key: Some(Secret::new("sk-good")), ..Default::default() };
        let mock = MockServer::start(addr, cfg).await.unwrap();
        let b = mock.base_url();
        let c = client();
        let r = c.post(format!("{b}/v1/chat/completions")).bearer_auth("sk-bad").json(&openai_req("m", false)).send().await.unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "invalid_api_key");
        let r = c.post(format!("{b}/v1/chat/completions")).bearer_auth("sk-good").json(&openai_req("m", false)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let r = c.post(format!("{b}/v1/messages")).json(&anthropic_req("m", false)).send().await.unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(r.json::<Value>().await.unwrap()["error"]["type"], "authentication_error");
        let r = c.post(format!("{b}/v1/messages")).header("x-api-key", "sk-good").json(&anthropic_req("m", false)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let u = format!("{b}/v1beta/models/g:generateContent");
        let r = c.post(&u).header("x-goog-api-key", "nope").json(&gemini_req()).send().await.unwrap();
        // Gemini answers a bad key with 400 INVALID_ARGUMENT, reason API_KEY_INVALID.
        assert_eq!(r.status(), 400);
        let v = r.json::<Value>().await.unwrap();
        assert_eq!((v["error"]["status"].as_str(), v["error"]["details"][0]["reason"].as_str()), (Some("INVALID_ARGUMENT"), Some("API_KEY_INVALID")));
        assert_eq!(c.post(&u).header("x-goog-api-key", "sk-good").json(&gemini_req()).send().await.unwrap().status(), 200);
        assert_eq!(c.post(format!("{u}?key=sk-good")).json(&gemini_req()).send().await.unwrap().status(), 200);
        assert_eq!(c.get(format!("{b}/v1/models")).send().await.unwrap().status(), 401);
        assert_eq!(c.get(format!("{b}/health")).send().await.unwrap().status(), 200);
        let counters = mock.counters();
        assert_eq!(counters["models"]["m"]["faults"]["auth_rejected"], 2);
        assert!(!counters.to_string().contains("sk-good"));
    }

    #[tokio::test]
    async fn control_plane_over_http() {
        let mock = start(Value::Null).await;
        let b = mock.base_url();
        let c = client();
        let r = c.post(format!("{b}/_mock/script")).json(&json!({"m": {"fault": "server_error", "status": 502}})).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(post(&format!("{b}/v1/chat/completions"), &openai_req("m", false)).await.status(), 502);
        let r = c.post(format!("{b}/_mock/script")).json(&json!({"m": {"faultt": "ok"}})).send().await.unwrap();
        assert_eq!(r.status(), 400);
        assert!(r.text().await.unwrap().contains("did you mean `fault`"));
        let counters: Value = c.get(format!("{b}/_mock/counters")).send().await.unwrap().json().await.unwrap();
        assert_eq!(counters["models"]["m"]["statuses"]["502"], 1);
        assert_eq!(c.post(format!("{b}/_mock/reset?scripts=1")).send().await.unwrap().status(), 200);
        assert_eq!(mock.counters()["requests"], 0);
        assert_eq!(post(&format!("{b}/v1/chat/completions"), &openai_req("m", false)).await.status(), 200);
        // Unknown routes and bad bodies.
        assert_eq!(c.get(format!("{b}/nope")).send().await.unwrap().status(), 404);
        let r = c.post(format!("{b}/v1/chat/completions")).body("{not json").send().await.unwrap();
        assert_eq!(r.status(), 400);
        assert_eq!(r.json::<Value>().await.unwrap()["error"]["type"], "invalid_request_error");
        let r = c.post(format!("{b}/v1/chat/completions")).json(&json!({"messages": []})).send().await.unwrap();
        assert_eq!(r.status(), 400);
        assert_eq!(mock.counters()["faults"]["bad_request"], 2);
    }

    #[tokio::test]
    async fn keep_alive_reuses_connections_and_shutdown_frees_port() {
        let mock = start(Value::Null).await;
        let addr = mock.addr();
        let c = client();
        for _ in 0..20 {
            let r = c.post(format!("{}/v1/chat/completions", mock.base_url())).json(&openai_req("m", false)).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.bytes().await.unwrap();
        }
        mock.shutdown().await;
        assert!(c.post(format!("http://{addr}/v1/chat/completions")).json(&openai_req("m", false)).send().await.is_err());
        let again = MockServer::start(addr, MockConfig::default()).await.unwrap();
        assert_eq!(again.addr(), addr);
        assert_eq!(post(&format!("{}/v1/chat/completions", again.base_url()), &openai_req("m", false)).await.status(), 200);
    }

    #[tokio::test]
    async fn invalid_start_scripts_are_an_error() {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let err = MockServer::start(addr, MockConfig { scripts: json!({"m": {"chunks": "many"}}), ..Default::default() }).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("scripts.m.chunks"), "{err}");
    }
}
