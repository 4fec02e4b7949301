//! The rustls server configuration (ring provider) from checked [`TlsSettings`] and the PEM
//! texts they name.

use std::sync::Arc;

use rustls::crypto::{CryptoProvider, ring};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ProtocolVersion, RootCertStore, ServerConfig, SupportedProtocolVersion};

use super::webconfig::{ClientAuth, TlsSettings, WebConfigError};

/// The PEM texts a [`TlsSettings`] names, read by the caller.
pub struct TlsPems<'a> {
    pub cert: &'a [u8],
    pub key: &'a [u8],
    pub client_ca: Option<&'a [u8]>,
}

pub fn server_config(settings: &TlsSettings, pems: &TlsPems<'_>) -> Result<ServerConfig, WebConfigError> {
    let err = |s: String| WebConfigError::Certificate(s);
    let provider = Arc::new(provider(settings)?);
    let versions: Vec<&'static SupportedProtocolVersion> = settings
        .versions
        .iter()
        .map(|v| match v {
            ProtocolVersion::TLSv1_2 => &rustls::version::TLS12,
            _ => &rustls::version::TLS13,
        })
        .collect();
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions)
        .map_err(|e| WebConfigError::Tls(e.to_string()))?;
    let builder = match (settings.client_auth, pems.client_ca) {
        (ClientAuth::None, _) | (_, None) => builder.with_no_client_auth(),
        (auth, Some(ca)) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca) {
                let cert = cert.map_err(|e| err(format!("client CA: {e}")))?;
                roots.add(cert).map_err(|e| err(format!("client CA: {e}")))?;
            }
            if roots.is_empty() {
                return Err(err("the client CA holds no certificate".into()));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider));
            let verifier = match auth {
                ClientAuth::VerifyIfGiven => verifier.allow_unauthenticated(),
                _ => verifier,
            };
            let verifier = verifier.build().map_err(|e| err(format!("client CA: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let chain = CertificateDer::pem_slice_iter(pems.cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(format!("certificate: {e}")))?;
    if chain.is_empty() {
        return Err(err("the certificate file holds no certificate".into()));
    }
    // The key's own error text never includes the key.
    let key = PrivateKeyDer::from_pem_slice(pems.key).map_err(|e| err(format!("private key: {e}")))?;
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| err(format!("certificate and key: {e}")))?;
    config.ignore_client_order = settings.prefer_server_cipher_suites;
    // HTTP/1.1 only: the `http2` key is accepted and means nothing here.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// ring's provider with the file's TLS 1.2 suites (in its order, after every TLS 1.3 suite)
/// and key-exchange groups (in its order).
fn provider(settings: &TlsSettings) -> Result<CryptoProvider, WebConfigError> {
    let mut provider = ring::default_provider();
    if !settings.cipher_suites.is_empty() {
        let all = std::mem::take(&mut provider.cipher_suites);
        let mut suites: Vec<_> = all
            .iter()
            .filter(|s| s.version() == &rustls::version::TLS13)
            .copied()
            .collect();
        for wanted in &settings.cipher_suites {
            suites.extend(all.iter().filter(|s| s.suite() == *wanted).copied());
        }
        provider.cipher_suites = suites;
    }
    if !settings.curves.is_empty() {
        let all = std::mem::take(&mut provider.kx_groups);
        provider.kx_groups = settings
            .curves
            .iter()
            .filter_map(|wanted| all.iter().find(|g| g.name() == *wanted).copied())
            .collect();
        if provider.kx_groups.is_empty() {
            return Err(WebConfigError::Tls("no curve of curve_preferences is available".into()));
        }
    }
    Ok(provider)
}
