//! The transports over TLS, against the mock serving HTTPS with a certificate made at test
//! time (a CA, and a leaf it signs with `CA:FALSE` and an IP SAN): `auto` takes HTTP/2 when
//! ALPN offers it and HTTP/1.1 when it does not, `"2"` and `"1.1"` do what they say, and both
//! transports trust (or refuse) a certificate the same way, through the pool's one verifier.

mod provider_util;

mod provider_h2_tls {
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    use _core::config::{HttpVersion, ModelConfig, ProviderKind};
    use _core::error::ErrorKind;
    use _core::mock::{MockConfig, MockServer, MockTls};
    use _core::provider::transport::PoolOptions;
    use _core::provider::{HttpPool, ProviderClient};
    use _core::secret::Secret;
    use _core::types::{ChatRequest, Message, Params, StreamEvent};
    use futures_util::StreamExt;
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use serde_json::{json, Value};
    use tokio::task::JoinSet;

    use super::provider_util::*;

    const KEY: &str = "sk-test-LEAKCHECK-tls";
    const BOUND: Duration = Duration::from_secs(20);

    /// A CA certificate, and a server certificate for 127.0.0.1 signed by it.
    struct Pki {
        ca: CertificateDer<'static>,
        leaf: CertificateDer<'static>,
        key: PrivateKeyDer<'static>,
    }

    fn pki() -> Pki {
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.distinguished_name.push(DnType::CommonName, "echelon test CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("CA key")).expect("CA certificate");
        let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).expect("leaf params");
        leaf.distinguished_name.push(DnType::CommonName, "127.0.0.1");
        leaf.subject_alt_names.push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        leaf.is_ca = IsCa::ExplicitNoCa;
        let leaf_key = KeyPair::generate().expect("leaf key");
        let cert = leaf.signed_by(&leaf_key, &ca).expect("leaf certificate");
        Pki { ca: ca.der().clone(), leaf: cert.der().clone(), key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())) }
    }

    async fn tls_mock(pki: &Pki, alpn: &[&[u8]], h2_max_streams: u32, scripts: Value) -> MockServer {
        let mut tls = MockTls::new(vec![pki.leaf.clone()], pki.key.clone_key());
        tls.alpn = alpn.iter().map(|p| p.to_vec()).collect();
        let config = MockConfig { tls: Some(tls), h2_max_streams, scripts, ..Default::default() };
        MockServer::start("127.0.0.1:0".parse().expect("addr"), config).await.expect("mock starts")
    }

    fn trusting(pki: &Pki) -> HttpPool {
        HttpPool::with_options(PoolOptions { extra_roots: vec![pki.ca.clone()], ..Default::default() })
    }

    fn model_at(mock: &MockServer, version: HttpVersion) -> ModelConfig {
        let mut m = model(ProviderKind::OpenAiCompatible, &format!("{}/v1", mock.base_url()), Secret::new(KEY));
        m.model = "m".into();
        m.http_version = version;
        m
    }

    fn req() -> ChatRequest {
        ChatRequest { messages: vec![Message::text("user", "hello")], params: Params::default() }
    }

    fn num(v: &Value, path: &str) -> u64 {
        v.pointer(path).and_then(Value::as_u64).unwrap_or_else(|| panic!("counter {path} in {v}"))
    }

    async fn calls(c: &ProviderClient, n: usize) {
        let mut set = JoinSet::new();
        for _ in 0..n {
            let c = c.clone();
            set.spawn(async move { c.chat(&req(), &relaxed()).await });
        }
        while let Some(r) = tokio::time::timeout(BOUND, set.join_next()).await.expect("calls finish") {
            let r = r.expect("task").expect("call succeeds");
            assert!(r.content.starts_with("Hello from m"));
        }
        let mut s = c.stream(&req(), &relaxed()).await.expect("stream opens");
        let mut done = false;
        while let Some(ev) = s.next().await {
            done = matches!(ev.expect("stream item"), StreamEvent::Done { .. });
        }
        assert!(done, "the stream ran to its end");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn auto_speaks_http2_when_alpn_offers_it() {
        let pki = pki();
        let mock = tls_mock(&pki, &[b"h2", b"http/1.1"], 10, json!({"m": {"latency_ms": 50}})).await;
        assert!(mock.base_url().starts_with("https://"));
        let pool = trusting(&pki);
        calls(&ProviderClient::new(model_at(&mock, HttpVersion::Auto), &pool), 40).await;
        let k = mock.counters();
        assert_eq!(num(&k, "/http2_requests"), 41, "every request over HTTP/2: {k}");
        assert!(num(&k, "/http2_connections") > 1, "more streams than one connection allows: {k}");
        assert_eq!(num(&k, "/tls_connections"), num(&k, "/connections"));
        assert!(num(&k, "/max_streams_per_connection") <= 10);
        let status = pool.http2_status();
        assert!(status.len() == 1 && !status[0].http1, "{status:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn auto_speaks_http1_when_the_server_chooses_it() {
        let pki = pki();
        let mock = tls_mock(&pki, &[b"http/1.1"], 10, json!({})).await;
        let pool = trusting(&pki);
        calls(&ProviderClient::new(model_at(&mock, HttpVersion::Auto), &pool), 20).await;
        let k = mock.counters();
        assert_eq!(num(&k, "/http2_requests"), 0, "{k}");
        assert_eq!(num(&k, "/models/m/requests"), 21);
        let status = pool.http2_status();
        assert!(status.len() == 1 && status[0].http1, "ALPN's choice is remembered: {status:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pinned_versions_over_tls() {
        let pki = pki();
        let mock = tls_mock(&pki, &[b"h2", b"http/1.1"], 100, json!({})).await;
        let pool = trusting(&pki);
        calls(&ProviderClient::new(model_at(&mock, HttpVersion::Http1), &pool), 10).await;
        assert_eq!(num(&mock.counters(), "/http2_requests"), 0, "\"1.1\" stays on HTTP/1.1 over TLS");
        calls(&ProviderClient::new(model_at(&mock, HttpVersion::Http2), &pool), 10).await;
        assert_eq!(num(&mock.counters(), "/http2_requests"), 11);

        // "2" refuses a server that picks HTTP/1.1.
        let h1_only = tls_mock(&pki, &[b"http/1.1"], 100, json!({})).await;
        let e = ProviderClient::new(model_at(&h1_only, HttpVersion::Http2), &pool).chat(&req(), &relaxed()).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::ConnectionError);
        assert!(e.message.contains("no HTTP/2"), "{}", e.message);

        // A server without ALPN: "2" speaks HTTP/2 anyway (prior knowledge), "auto" HTTP/1.1.
        let no_alpn = tls_mock(&pki, &[], 100, json!({})).await;
        calls(&ProviderClient::new(model_at(&no_alpn, HttpVersion::Http2), &pool), 5).await;
        assert_eq!(num(&no_alpn.counters(), "/http2_requests"), 6);
        calls(&ProviderClient::new(model_at(&no_alpn, HttpVersion::Auto), &pool), 5).await;
        assert_eq!(num(&no_alpn.counters(), "/http2_requests"), 6);
        assert_eq!(num(&no_alpn.counters(), "/models/m/requests"), 12);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn both_transports_refuse_an_untrusted_certificate() {
        let pki = pki();
        let mock = tls_mock(&pki, &[b"h2", b"http/1.1"], 100, json!({})).await;
        // The platform's roots only: the test CA is not among them.
        let pool = HttpPool::new();
        for version in [HttpVersion::Http1, HttpVersion::Auto, HttpVersion::Http2] {
            let e = ProviderClient::new(model_at(&mock, version), &pool).chat(&req(), &relaxed()).await.unwrap_err();
            assert_eq!(e.kind, ErrorKind::ConnectionError, "{version:?}: {}", e.message);
            let m = e.message.to_ascii_lowercase();
            assert!(m.contains("certificate") || m.contains("unknownissuer"), "{version:?}: the cause is shown: {}", e.message);
            assert!(!e.message.contains(KEY));
        }
        assert_eq!(num(&mock.counters(), "/tls_connections"), 0);
        assert_eq!(num(&mock.counters(), "/requests"), 0);
    }
}
