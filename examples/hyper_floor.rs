//! The throughput floor one layer below reqwest: hyper's own HTTP/2 client (one connection,
//! `SendRequest` cloned per request, no pool, no redirect/retry layers, no URL handling), to
//! measure what reqwest adds on top of hyper for the P6 workload.
//!
//! Start a mock (`echelon mock-server --port 8900`), then
//! `WORKERS=1 taskset -c 0 cargo run --release --no-default-features --example hyper_floor -- 8900 20000`.
//! Prints requests per second, 256 at a time (closed loop), three times, like
//! `reqwest_floor ... rps`. `WORKERS=N` sets the runtime's worker threads (default 2).

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(port), Some(n)) = (args.get(1).and_then(|a| a.parse::<u16>().ok()), args.get(2).and_then(|a| a.parse::<usize>().ok())) else {
        eprintln!("usage: hyper_floor PORT REQUESTS");
        std::process::exit(2);
    };
    let workers: usize = std::env::var("WORKERS").ok().and_then(|w| w.parse().ok()).unwrap_or(2);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(workers.max(1)).enable_all().build().expect("runtime");
    let handle = rt.handle().clone();
    let _ = rt.block_on(handle.spawn(async move {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect to the mock");
        tcp.set_nodelay(true).expect("nodelay");
        let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.expect("h2 handshake");
        tokio::spawn(conn);
        let uri: hyper::Uri = format!("http://127.0.0.1:{port}/v1/chat/completions").parse().expect("uri");
        let body = Bytes::from_static(br#"{"model":"floor","messages":[{"role":"user","content":"hi"}],"max_tokens":16}"#);
        // Counts complete 200 responses and their bytes, so a failing run cannot pass for a fast one.
        let ok = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let bytes_read = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let send = |mut s: hyper::client::conn::http2::SendRequest<Full<Bytes>>| {
            let req = hyper::Request::post(uri.clone()).header("content-type", "application/json").body(Full::new(body.clone())).expect("request");
            let (ok, bytes_read) = (ok.clone(), bytes_read.clone());
            async move {
                if s.ready().await.is_ok() {
                    if let Ok(r) = s.send_request(req).await {
                        let status = r.status();
                        if let Ok(b) = r.into_body().collect().await {
                            if status == hyper::StatusCode::OK {
                                ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                bytes_read.fetch_add(b.to_bytes().len(), std::sync::atomic::Ordering::Relaxed);
                            }
                        }
                    }
                }
            }
        };
        send(sender.clone()).await;
        for _ in 0..3 {
            ok.store(0, std::sync::atomic::Ordering::Relaxed);
            bytes_read.store(0, std::sync::atomic::Ordering::Relaxed);
            let t0 = std::time::Instant::now();
            futures_util::stream::iter(0..n).for_each_concurrent(256, |_| send(sender.clone())).await;
            let el = t0.elapsed().as_secs_f64();
            let done = ok.load(std::sync::atomic::Ordering::Relaxed);
            let avg = bytes_read.load(std::sync::atomic::Ordering::Relaxed) / done.max(1);
            println!("bare hyper, HTTP/2: {:.0} req/s ({done}/{n} ok, {avg}-byte bodies, 256 at a time)", n as f64 / el);
        }
        std::process::exit(0);
    }));
}
