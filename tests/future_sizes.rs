//! Guards the per-request memory of the engine: every in-flight call holds one `Router::run`
//! future in its tokio task, so its size is paid once per concurrent request. Rare paths
//! (hedging, stream opening, reading an error response) are boxed, nothing large is kept
//! alive across a retry's wait or the body read, the HTTP send takes the started request rather
//! than its builder, and a call that must wait for capacity boxes its waiting state, to keep it
//! small (1,944 bytes, from 2,992); this test fails if that regresses.

use _core::config::Config;
use _core::engine::router::{CallOptions, Route, Router};
use _core::types::{ChatRequest, Message};

#[test]
fn the_per_request_future_stays_small() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let router = Router::new(Config::default(), rt.handle().clone());
    let req = ChatRequest { messages: vec![Message::text("user", "hi")], params: Default::default() };
    let opts = CallOptions::default();
    let route = Route::Pool("p".into());
    let fut = router.run(Some(&route), &req, &opts, false);
    let size = std::mem::size_of_val(&fut);
    eprintln!("Router::run future: {size} bytes");
    assert!(size <= 2048, "Router::run future grew to {size} bytes");
}
