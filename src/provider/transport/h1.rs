//! The reqwest clients: HTTP/1.1 (every `"1.1"` model, `"auto"` on `http://` or when ALPN
//! chooses HTTP/1.1), and the previous HTTP/2 path (reqwest's own, kept selectable with
//! `ECHELON_HTTP2_CLIENT=reqwest` so benchmarks can compare it with the hyper transport).

use std::time::Duration;

use super::tls::{Tls, ALPN_H2, ALPN_HTTP1};
use crate::provider::classify::error_chain;

/// Which protocol a reqwest client speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flavour {
    /// HTTP/1.1 only.
    Http1,
    /// reqwest's HTTP/2 with prior knowledge (h2c on `http://`): the previous `"2"`.
    Http2,
    /// reqwest's ALPN choice over TLS, HTTP/1.1 on `http://`: the previous `"auto"`.
    Alpn,
}

/// A reqwest client: keep-alive, `tcp_nodelay`, up to 256 idle connections per host closed
/// after `idle`, no proxy lookup, no redirects, TLS from `tls`.
pub(crate) fn client(flavour: Flavour, connect: Option<Duration>, idle: Duration, tls: &Tls) -> Result<reqwest::Client, String> {
    let alpn: &[&[u8]] = match flavour {
        Flavour::Http1 => &[ALPN_HTTP1],
        Flavour::Http2 => &[ALPN_H2],
        Flavour::Alpn => &[ALPN_H2, ALPN_HTTP1],
    };
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(256)
        .pool_idle_timeout(idle)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(super::USER_AGENT)
        .tls_backend_preconfigured(tls.client_config(alpn)?);
    if let Some(c) = connect {
        b = b.connect_timeout(c);
    }
    b = match flavour {
        // reqwest's own retry layer only replays HTTP/2 refusals (REFUSED_STREAM, GOAWAY); on
        // HTTP/1.1 it would do nothing but copy every request's headers in case.
        Flavour::Http1 => b.http1_only().retry(reqwest::retry::never().max_retries_per_request(0)),
        Flavour::Http2 => b.http2_prior_knowledge(),
        Flavour::Alpn => b,
    };
    b.build().map_err(|e| error_chain(&e))
}
