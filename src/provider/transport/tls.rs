//! TLS client settings shared by both transports.
//!
//! One certificate verifier per [`super::HttpPool`]: the platform's root store through
//! `rustls-platform-verifier` (what reqwest uses by default), plus any extra roots the pool was
//! given. reqwest gets a `rustls::ClientConfig` built from it (`tls_backend_preconfigured`), and
//! the HTTP/2 transport builds its own from the same verifier, so a certificate is trusted or
//! refused the same way whichever protocol a provider ends up on. Only the ALPN list differs.

use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::ClientConfig;

/// ALPN for HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN for HTTP/1.1.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// The verifier and crypto provider every TLS connection of one pool uses.
pub struct Tls {
    provider: Arc<CryptoProvider>,
    verifier: Arc<dyn ServerCertVerifier>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

/// The crypto provider: one installed as the process default, else aws-lc-rs (reqwest's own
/// rule, so both transports negotiate the same cipher suites).
fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default().cloned().unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
}

impl Tls {
    /// The platform's roots plus `extra_roots`. Fails when no root can be loaded at all (no
    /// system certificates and no extra roots) or an extra root does not parse.
    pub fn new(extra_roots: &[CertificateDer<'static>]) -> Result<Tls, String> {
        let provider = provider();
        let verifier = if extra_roots.is_empty() {
            rustls_platform_verifier::Verifier::new(provider.clone())
        } else {
            rustls_platform_verifier::Verifier::new_with_extra_roots(extra_roots.iter().cloned(), provider.clone())
        }
        .map_err(|e| format!("TLS root certificates: {e}"))?;
        Ok(Tls { provider, verifier: Arc::new(verifier) })
    }

    /// A client config offering `alpn` (in order of preference).
    pub fn client_config(&self, alpn: &[&[u8]]) -> Result<ClientConfig, String> {
        let mut c = ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(rustls::ALL_VERSIONS)
            .map_err(|e| format!("TLS versions: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(self.verifier.clone())
            .with_no_client_auth();
        c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(c)
    }
}
