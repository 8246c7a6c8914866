//! Throughput of the routing engine alone (no Python): `Router::run` for many requests at
//! 256 at a time, on a runtime of WORKERS threads (0: current-thread), to compare with bare
//! reqwest (`reqwest_floor ... rps`) and with `Router.batch` through Python (P6).
//!
//! `taskset -c 0 cargo run --release --no-default-features --features mimalloc --example router_floor -- PORT N [1.1|2]`
//! (`WORKERS=N`: runtime worker threads, default 2; 0: current-thread. `ECHELON_HTTP2_CLIENT=reqwest`
//! sends HTTP/2 through reqwest's client, the path before the hyper transport, to compare.)
//!
//! With a fourth argument `hold`, it instead has the mock hold every response for 5 s and
//! prints the RSS growth per in-flight request, like `reqwest_floor` (P3 without Python).

use futures_util::StreamExt;
use std::sync::Arc;

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    statm.split_whitespace().nth(1).and_then(|p| p.parse::<usize>().ok()).expect("statm resident pages") * 4096
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = args[1].parse().expect("port");
    let n: usize = args[2].parse().expect("requests");
    let hv = args.get(3).cloned().unwrap_or_else(|| "1.1".into());
    let workers: usize = std::env::var("WORKERS").ok().and_then(|w| w.parse().ok()).unwrap_or(2);
    let rt = if workers == 0 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build()
    }
    .expect("runtime");
    let cfg = serde_json::json!({
        "providers": {"mock": {
            "common": {"type": "openai_compatible", "base_url": format!("http://127.0.0.1:{port}/v1"), "api_key": "sk-floor", "max_retries": 0, "http_version": hv},
            "bench-a": {"model": "mock-1"}, "bench-b": {"model": "mock-1"}}},
        "groups": {"bench": {"echelon1": {"models": ["bench-a", "bench-b"], "max_retries": 0}}},
        "pools": {"bench": {"task_groups": ["bench"], "health_check": {"enabled": false}}},
        "global": {"default_route": "pool:bench"},
    });
    let cfg = _core::config::from_json(&cfg).expect("config");
    let router = Arc::new(_core::engine::router::Router::new(cfg, rt.handle().clone()));
    let route = _core::engine::router::Route::parse("pool:bench").expect("route");
    let req: _core::types::ChatRequest = serde_json::from_value(serde_json::json!({
        "messages": [{"role": "user", "content": "Say hello in one short sentence, please."}],
        "params": {"max_tokens": 16}
    }))
    .expect("request");
    let opts = _core::engine::router::CallOptions::default();
    let handle = rt.handle().clone();
    if args.get(4).map(String::as_str) == Some("hold") {
        let (router, route, req, opts, hv) = (router.clone(), route.clone(), req.clone(), opts.clone(), hv.clone());
        rt.block_on(handle.spawn(async move {
            let script = format!("http://127.0.0.1:{port}/_mock/script");
            reqwest::Client::new().post(script).body(r#"{"*":{"latency_ms":5000}}"#).send().await.expect("mock control plane");
            let _ = router.run(Some(&route), &req, &opts, false).await; // warm: connection, lazy statics
            let base = rss_bytes();
            let held: Vec<_> = (0..n)
                .map(|_| {
                    let (router, route, req, opts) = (router.clone(), route.clone(), req.clone(), opts.clone());
                    tokio::spawn(async move { router.run(Some(&route), &req, &opts, false).await.is_ok() })
                })
                .collect();
            tokio::time::sleep(std::time::Duration::from_secs(3)).await;
            let per = (rss_bytes() - base) as f64 / n as f64 / 1024.0;
            println!("router, HTTP/{hv}: {per:.1} KB of RSS per in-flight request ({n} held)");
            drop(held);
            std::process::exit(0);
        }))
        .expect("hold task");
    }
    rt.block_on(handle.spawn(async move {
        for round in 0..4 {
            let t0 = std::time::Instant::now();
            let ok = futures_util::stream::iter(0..n)
                .map(|_| {
                    let (router, route, req, opts) = (router.clone(), &route, &req, &opts);
                    async move { router.run(Some(route), req, opts, false).await.is_ok() }
                })
                .buffered(256)
                .filter(|ok| std::future::ready(*ok))
                .count()
                .await;
            let el = t0.elapsed().as_secs_f64();
            if round > 0 {
                println!("router, HTTP/{hv}, workers {workers}: {:.0} req/s ({ok}/{n} ok)", n as f64 / el);
            }
        }
    }))
    .expect("batch task");
}
