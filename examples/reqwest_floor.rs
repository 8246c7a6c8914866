//! The memory floor of the HTTP client alone: bytes of RSS per in-flight request for bare
//! `reqwest` (no routing), to compare with the P3 figure of the benchmarks.
//!
//! Start a mock (`echelon mock-server --port 8900`), then
//! `cargo run --release --no-default-features --example reqwest_floor -- 8900 10000 [1.1|2] [rps]`.
//! The mock is told to hold every response for 5 s; the RSS growth while all requests are
//! held, divided by their number, is printed.
//!
//! With a fourth argument `rps`, it instead sends the requests 256 at a time (closed loop,
//! responses not held) and prints requests per second: the throughput floor of the client
//! alone, to compare with `Router.batch` (P6). Pin it with `taskset -c 0` like the benchmarks.
//! `WORKERS=N` sets the runtime's worker threads (default 2, like the engine; 0: current-thread).

use std::time::Duration;

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    statm.split_whitespace().nth(1).and_then(|p| p.parse::<usize>().ok()).expect("statm resident pages") * 4096
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(port), Some(n)) = (args.get(1).and_then(|a| a.parse::<u16>().ok()), args.get(2).and_then(|a| a.parse::<usize>().ok())) else {
        eprintln!("usage: reqwest_floor PORT REQUESTS [1.1|2] [rps]");
        std::process::exit(2);
    };
    let h2 = args.get(3).map(String::as_str) == Some("2");
    let workers: usize = std::env::var("WORKERS").ok().and_then(|w| w.parse().ok()).unwrap_or(2);
    let rt = if workers == 0 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build()
    }
    .expect("runtime");
    // Spawned, not run by block_on: the work then runs on the worker threads only, like the
    // engine's tasks do, instead of bouncing between the main thread and a worker.
    let handle = rt.handle().clone();
    let _ = rt.block_on(handle.spawn(async move {
        let b = reqwest::Client::builder().no_proxy().tcp_nodelay(true);
        let client = if h2 { b.http2_prior_knowledge() } else { b.http1_only() }.build().expect("client");
        let url = format!("http://127.0.0.1:{port}/v1/chat/completions");
        let body = r#"{"model":"floor","messages":[{"role":"user","content":"hi"}],"max_tokens":16}"#;
        let send = |c: reqwest::Client, url: String| async move {
            if let Ok(r) = c.post(&url).header("content-type", "application/json").body(body).send().await {
                let _ = r.bytes().await;
            }
        };
        send(client.clone(), url.clone()).await; // warm: connection pool, lazy statics
        if args.get(4).map(String::as_str) == Some("rps") {
            use futures_util::StreamExt;
            for _ in 0..3 {
                let t0 = std::time::Instant::now();
                futures_util::stream::iter(0..n).for_each_concurrent(256, |_| send(client.clone(), url.clone())).await;
                let el = t0.elapsed().as_secs_f64();
                println!("bare reqwest, HTTP/{}: {:.0} req/s ({n} requests, 256 at a time)", if h2 { "2" } else { "1.1" }, n as f64 / el);
            }
            std::process::exit(0);
        }
        let script = format!("http://127.0.0.1:{port}/_mock/script");
        reqwest::Client::new().post(script).body(r#"{"*":{"latency_ms":5000}}"#).send().await.expect("mock control plane");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let base = rss_bytes();
        let _held: Vec<_> = (0..n).map(|_| tokio::spawn(send(client.clone(), url.clone()))).collect();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let per = (rss_bytes() - base) as f64 / n as f64 / 1024.0;
        println!("bare reqwest, HTTP/{}: {per:.1} KB of RSS per in-flight request ({n} held)", if h2 { "2" } else { "1.1" });
        std::process::exit(0);
    }));
}
