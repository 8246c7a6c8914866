//! The gateway over real HTTP on loopback, in front of the mock provider: both API shapes,
//! routing errors, keys, a drain that ends a stream past its grace, and a reload that rejects
//! a broken directory while the old configuration keeps serving.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::{Gateway, ServeOptions};
use crate::engine::router::Router;
use crate::mock::{MockConfig, MockServer};

const BOUND: Duration = Duration::from_secs(10);

async fn mock(scripts: Value) -> MockServer {
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    MockServer::start(addr, MockConfig { scripts, ..Default::default() }).await.expect("mock starts")
}

fn config_json(base: &str, gateway: Value) -> Value {
    json!({
        "providers": {"mock": {
            "common": {"type": "openai_compatible", "base_url": format!("{base}/v1"), "api_key": "mock-key", "max_retries": 0,
                       "timeouts": {"connect": 1, "first_token": 2, "total": 5, "idle": 2}},
            "m-a": {"model": "m-a"}, "m-b": {"model": "m-b"},
        }},
        "groups": {"g": {"echelon1": {"models": ["m-a"]}, "echelon2": {"models": ["m-b"]}}},
        "pools": {"p": {"task_groups": ["g"]}},
        "global": {"gateway": gateway},
    })
}

async fn serve(cfg: crate::config::Config, opts: ServeOptions) -> (Arc<Router>, Gateway) {
    let router = Arc::new(Router::new(cfg, tokio::runtime::Handle::current()));
    let gw = Gateway::start(router.clone(), ServeOptions { port: Some(0), ..opts }).await.expect("gateway starts");
    (router, gw)
}

fn url(gw: &Gateway, path: &str) -> String {
    format!("http://{}{path}", gw.addr())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_shapes_answer_with_the_instance_and_attempts() {
    let m = mock(json!({"m-a": {"fault": "server_error", "status": 503}})).await;
    let cfg = crate::config::from_json(&config_json(&m.base_url(), json!({}))).unwrap();
    let (_router, gw) = serve(cfg, ServeOptions::default()).await;
    let http = reqwest::Client::new();
    let r = http
        .post(url(&gw, "/v1/chat/completions"))
        .body(json!({"model": "g", "messages": [{"role": "user", "content": "hi"}]}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-echelon-instance"], "g.echelon2_m-b");
    assert_eq!(r.headers()["x-echelon-attempts"], "2");
    let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert!(body["choices"][0]["message"]["content"].as_str().unwrap().starts_with("Hello from m-b."));
    let r = http
        .post(url(&gw, "/v1/messages"))
        .body(json!({"model": "p", "max_tokens": 20, "stream": true, "messages": [{"role": "user", "content": "hi"}]}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let text = r.text().await.unwrap();
    assert!(text.starts_with("event: message_start") && text.trim_end().ends_with("data: {\"type\":\"message_stop\"}"), "{text}");
    let r = http
        .post(url(&gw, "/v1/chat/completions"))
        .body(json!({"model": "gg", "messages": [{"role": "user", "content": "hi"}]}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("did you mean `g`"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_required_and_limited_to_their_routes() {
    let m = mock(Value::Null).await;
    let hash: String = crate::config::key_digest("sk-ops-123456").iter().map(|b| format!("{b:02x}")).collect();
    let cfg =
        crate::config::from_json(&config_json(&m.base_url(), json!({"keys": [{"name": "ops", "api_key_sha256": hash, "routes": ["g.echelon2"]}]}))).unwrap();
    let (_router, gw) = serve(cfg, ServeOptions::default()).await;
    let http = reqwest::Client::new();
    let call = |model: &str, key: Option<&str>| {
        let mut rb = http.post(url(&gw, "/v1/chat/completions")).body(json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}).to_string());
        if let Some(k) = key {
            rb = rb.bearer_auth(k);
        }
        rb.send()
    };
    assert_eq!(call("g.echelon2", None).await.unwrap().status(), 401);
    assert_eq!(call("g.echelon2", Some("sk-other")).await.unwrap().status(), 401);
    assert_eq!(call("g", Some("sk-ops-123456")).await.unwrap().status(), 403);
    assert_eq!(call("g.echelon2", Some("sk-ops-123456")).await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_past_its_grace_ends_the_stream_with_an_error_event() {
    let m = mock(json!({"m-a": {"chunk_delay_ms": 400}})).await;
    let cfg = crate::config::from_json(&config_json(&m.base_url(), json!({}))).unwrap();
    let (_router, gw) = serve(cfg, ServeOptions::default()).await;
    let resp = reqwest::Client::new()
        .post(url(&gw, "/v1/chat/completions"))
        .body(json!({"model": "g", "stream": true, "messages": [{"role": "user", "content": "hi"}]}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    gw.drain(Some(Duration::from_millis(200)));
    let body = tokio::time::timeout(BOUND, resp.text()).await.expect("the stream ends").unwrap();
    assert!(body.contains("shut down before the stream finished") && body.trim_end().ends_with("data: [DONE]"), "{body}");
    tokio::time::timeout(BOUND, gw.closed()).await.expect("the gateway stops");
    assert!(tokio::net::TcpStream::connect(gw.addr()).await.is_err(), "the port is closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_directory_is_rejected_and_the_old_configuration_serves_on() {
    let m = mock(Value::Null).await;
    let dir = std::env::temp_dir().join(format!("echelon-gw-reload-{}", rand::random::<u64>()));
    let llms = dir.join("llms");
    std::fs::create_dir_all(llms.join("provider/mock")).unwrap();
    std::fs::create_dir_all(llms.join("groups")).unwrap();
    std::fs::write(llms.join("provider/mock/common.toml"), format!("type = \"openai_compatible\"\nbase_url = \"{}/v1\"\napi_key = \"k\"\n", m.base_url()))
        .unwrap();
    std::fs::write(llms.join("provider/mock/m-a.toml"), "model = \"m-a\"\n").unwrap();
    std::fs::write(llms.join("groups/g.toml"), "[echelon1]\nmodels = [\"m-a\"]\n").unwrap();
    let cfg = crate::config::load_dir(&dir).unwrap();
    let (router, gw) = serve(cfg, ServeOptions { watch: Some(false), ..Default::default() }).await;
    std::fs::write(llms.join("groups/h.toml"), "[echelon1]\nmodels = [\"m-a\"]\n").unwrap();
    assert!(tokio::task::block_in_place(|| gw.reload()).expect("reloads"));
    assert!(router.engine().groups.contains_key("h"));
    std::fs::write(llms.join("groups/h.toml"), "[echelon1]\nmodels = [\"nope\"]\n").unwrap();
    let err = tokio::task::block_in_place(|| gw.reload()).expect_err("rejected");
    assert!(err.to_string().contains("nope"), "{err}");
    let r = reqwest::Client::new()
        .post(url(&gw, "/v1/chat/completions"))
        .body(json!({"model": "h", "messages": [{"role": "user", "content": "hi"}]}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the old configuration still serves h");
    let _ = std::fs::remove_dir_all(&dir);
}
