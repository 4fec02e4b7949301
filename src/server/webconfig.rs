//! The `--web.config.file` format of the Prometheus exporter-toolkit (what node_exporter
//! reads), parsed and checked without touching the file system: [`parse`] is a pure function
//! of the text, so a fuzzer can drive it. Files the configuration names are read later
//! (`live.rs`), relative to the configuration file's directory as the toolkit does.
//!
//! What rustls cannot honour is refused with the reason, never silently dropped: TLS 1.0 and
//! 1.1 as a maximum, CBC and RSA-key-exchange cipher suites, the P-521 curve, and client
//! certificates that are asked for but not verified, e-mail and URI names in
//! `client_allowed_sans`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use rustls::pki_types::ServerName;
use rustls::{CipherSuite, NamedGroup, ProtocolVersion};
use serde::Deserialize;

/// Why a web configuration cannot be used. The text never holds a password: the file's
/// passwords are bcrypt hashes, and only the user's name is quoted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebConfigError {
    #[error("{0}")]
    Yaml(String),
    #[error("tls_server_config: {0}")]
    Tls(String),
    #[error("http_server_config: {0}")]
    Http(String),
    #[error("basic_auth_users: the hash of user {user:?} is not a bcrypt hash ($2a$, $2b$ or $2y$): {reason}")]
    Hash { user: String, reason: String },
    #[error("rate_limit: {0}")]
    RateLimit(String),
    #[error("reading {what} {path}: {reason}")]
    Read {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{0}")]
    Certificate(String),
}

/// Where a PEM text comes from: a file (re-read when the configuration is) or the
/// configuration itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pem {
    File(PathBuf),
    Inline(String),
}

/// The toolkit's `client_auth_type`, reduced to what rustls can do: a client certificate is
/// either not asked for, verified when given, or required and verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    VerifyIfGiven,
    RequireAndVerify,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub cert: Pem,
    pub key: Pem,
    pub client_ca: Option<Pem>,
    pub client_auth: ClientAuth,
    /// The versions served, oldest first: TLS 1.2 and/or 1.3.
    pub versions: Vec<ProtocolVersion>,
    /// TLS 1.2 suites allowed (empty: rustls's defaults). As in Go, TLS 1.3 suites are
    /// not configurable and always offered.
    pub cipher_suites: Vec<CipherSuite>,
    /// Key-exchange groups in preference order (empty: rustls's defaults).
    pub curves: Vec<NamedGroup>,
    pub prefer_server_cipher_suites: bool,
    /// When not empty, a client certificate must name one of these (DNS names or IP
    /// addresses) among its subject alternative names.
    pub client_allowed_sans: Vec<ServerName<'static>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// One request is allowed per interval, with bursts of up to `burst`.
    pub interval: Duration,
    pub burst: u32,
}

/// A checked web configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebSettings {
    pub tls: Option<TlsSettings>,
    /// Response headers added to every answer.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// User name → bcrypt hash; empty means no authentication.
    pub users: BTreeMap<String, String>,
    pub rate_limit: Option<RateLimit>,
    /// What was accepted but cannot be honoured exactly (logged at each load).
    pub warnings: Vec<String>,
}

// The file's shape, field names as the toolkit spells them; unknown keys are refused, as
// the toolkit's strict YAML decoding does.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    tls_server_config: Option<TlsFile>,
    #[serde(default)]
    http_server_config: Option<HttpFile>,
    #[serde(default)]
    basic_auth_users: Option<BTreeMap<String, String>>,
    #[serde(default)]
    rate_limit: Option<RateLimitFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert: Option<String>,
    key: Option<String>,
    client_ca: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    client_ca_file: Option<String>,
    client_auth_type: Option<String>,
    cipher_suites: Option<Vec<String>>,
    curve_preferences: Option<Vec<String>>,
    min_version: Option<String>,
    max_version: Option<String>,
    prefer_server_cipher_suites: Option<bool>,
    client_allowed_sans: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    #[allow(dead_code)] // accepted for compatibility: sonde serves HTTP/1.1 only
    http2: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitFile {
    burst: Option<u32>,
    interval: Option<String>,
}

/// The response headers the toolkit lets a file set, with the values allowed where the
/// header's values are an enumeration (the same list as the toolkit, for the same answers).
const HEADERS: &[(&str, &[&str])] = &[
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

/// Parses and checks a web configuration. Relative file names stay relative: see
/// [`WebSettings::relative_to`].
pub fn parse(text: &str) -> Result<WebSettings, WebConfigError> {
    let file: File = if text.trim().is_empty() {
        File::default()
    } else {
        // serde_yaml_ng's message names the line and column; never the value's text.
        serde_yaml_ng::from_str::<Option<File>>(text)
            .map_err(|e| WebConfigError::Yaml(e.to_string()))?
            .unwrap_or_default()
    };
    let mut warnings = Vec::new();
    let tls = match file.tls_server_config {
        Some(tls) => tls_settings(tls, &mut warnings)?,
        None => None,
    };
    let mut headers = Vec::new();
    if let Some(http) = file.http_server_config {
        for (name, value) in http.headers.unwrap_or_default() {
            headers.push(header(&name, &value)?);
        }
    }
    let users = file.basic_auth_users.unwrap_or_default();
    for (user, hash) in &users {
        check_hash(hash).map_err(|reason| WebConfigError::Hash {
            user: user.clone(),
            reason,
        })?;
    }
    let rate_limit = match file.rate_limit {
        Some(limit) => rate_limit(limit)?,
        None => None,
    };
    Ok(WebSettings {
        tls,
        headers,
        users,
        rate_limit,
        warnings,
    })
}

/// Same as [`parse`] from bytes (a fuzzer's input); the file must be UTF-8.
pub fn parse_bytes(bytes: &[u8]) -> Result<WebSettings, WebConfigError> {
    let text = std::str::from_utf8(bytes).map_err(|e| WebConfigError::Yaml(format!("not UTF-8: {e}")))?;
    parse(text)
}

impl WebSettings {
    /// Joins relative file names with `dir` (the configuration file's directory).
    pub fn relative_to(mut self, dir: &Path) -> Self {
        if let Some(tls) = &mut self.tls {
            for pem in [&mut tls.cert, &mut tls.key].into_iter().chain(tls.client_ca.as_mut()) {
                if let Pem::File(path) = pem
                    && path.is_relative()
                {
                    *path = dir.join(&*path);
                }
            }
        }
        self
    }
}

fn tls_settings(file: TlsFile, warnings: &mut Vec<String>) -> Result<Option<TlsSettings>, WebConfigError> {
    let err = |s: String| WebConfigError::Tls(s);
    let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
    // As the toolkit: TLS is on when any of these is set, and then needs both halves.
    let enabled = set(&file.cert)
        || set(&file.key)
        || set(&file.cert_file)
        || set(&file.key_file)
        || set(&file.client_ca)
        || set(&file.client_ca_file)
        || set(&file.client_auth_type);
    if !enabled {
        return Ok(None);
    }
    let pem = |path: &Option<String>, inline: &Option<String>| match (path, inline) {
        (Some(p), _) if !p.is_empty() => Some(Pem::File(PathBuf::from(p))),
        (_, Some(text)) if !text.is_empty() => Some(Pem::Inline(text.clone())),
        _ => None,
    };
    let cert = pem(&file.cert_file, &file.cert).ok_or_else(|| err("missing one of cert or cert_file".into()))?;
    let key = pem(&file.key_file, &file.key).ok_or_else(|| err("missing one of key or key_file".into()))?;
    let client_ca = pem(&file.client_ca_file, &file.client_ca);
    let client_auth = match file.client_auth_type.as_deref().unwrap_or("") {
        "" | "NoClientCert" => ClientAuth::None,
        "VerifyClientCertIfGiven" => ClientAuth::VerifyIfGiven,
        "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerify,
        kind @ ("RequestClientCert" | "RequireAnyClientCert" | "RequireClientCert") => {
            return Err(err(format!(
                "client_auth_type {kind} (a client certificate taken without verifying it) is not supported; \
                 use VerifyClientCertIfGiven or RequireAndVerifyClientCert with a client_ca_file"
            )));
        }
        other => return Err(err(format!("invalid client_auth_type {other:?}"))),
    };
    match (client_auth, &client_ca) {
        (ClientAuth::None, Some(_)) => {
            return Err(err("client CAs have been configured without a client_auth_type".into()));
        }
        (ClientAuth::VerifyIfGiven | ClientAuth::RequireAndVerify, None) => {
            return Err(err(
                "client_auth_type verifies client certificates: it needs client_ca_file or client_ca".into(),
            ));
        }
        _ => {}
    }
    let mut client_allowed_sans = Vec::new();
    for san in file.client_allowed_sans.unwrap_or_default() {
        // Only DNS names and IP addresses can be checked (rustls-webpki); e-mail and URI
        // names are refused rather than never matched.
        let name = ServerName::try_from(san.clone()).map_err(|_| {
            err(format!(
                "client_allowed_sans entry {san:?}: only DNS names and IP addresses are supported"
            ))
        })?;
        client_allowed_sans.push(name);
    }
    if !client_allowed_sans.is_empty() && client_auth != ClientAuth::RequireAndVerify {
        return Err(err(
            "client_allowed_sans requires client_auth_type RequireAndVerifyClientCert".into(),
        ));
    }
    let min = version(file.min_version.as_deref(), ProtocolVersion::TLSv1_2)?;
    let max = version(file.max_version.as_deref(), ProtocolVersion::TLSv1_3)?;
    let rank = |v: ProtocolVersion| u16::from(v);
    if rank(max) < rank(ProtocolVersion::TLSv1_2) {
        return Err(err(format!(
            "max_version {} is not supported: rustls serves TLS 1.2 and 1.3 only",
            file.max_version.as_deref().unwrap_or_default()
        )));
    }
    if rank(min) > rank(max) {
        return Err(err("min_version is above max_version".into()));
    }
    if rank(min) < rank(ProtocolVersion::TLSv1_2) {
        warnings.push(format!(
            "tls_server_config: min_version {} is served as TLS12: rustls has no TLS 1.0 or 1.1",
            file.min_version.as_deref().unwrap_or_default()
        ));
    }
    let versions = [ProtocolVersion::TLSv1_2, ProtocolVersion::TLSv1_3]
        .into_iter()
        .filter(|v| rank(*v) >= rank(min) && rank(*v) <= rank(max))
        .collect();
    let mut cipher_suites = Vec::new();
    for name in file.cipher_suites.unwrap_or_default() {
        // None: a TLS 1.3 suite; Go ignores these in the list too, all are always offered.
        if let Some(suite) = cipher_suite(&name)? {
            cipher_suites.push(suite);
        }
    }
    let mut curves = Vec::new();
    for name in file.curve_preferences.unwrap_or_default() {
        curves.push(curve(&name)?);
    }
    Ok(Some(TlsSettings {
        cert,
        key,
        client_ca,
        client_auth,
        versions,
        cipher_suites,
        curves,
        prefer_server_cipher_suites: file.prefer_server_cipher_suites.unwrap_or(true),
        client_allowed_sans,
    }))
}

fn version(name: Option<&str>, default: ProtocolVersion) -> Result<ProtocolVersion, WebConfigError> {
    Ok(match name {
        None | Some("") => default,
        Some("TLS10") => ProtocolVersion::TLSv1_0,
        Some("TLS11") => ProtocolVersion::TLSv1_1,
        Some("TLS12") => ProtocolVersion::TLSv1_2,
        Some("TLS13") => ProtocolVersion::TLSv1_3,
        Some(other) => {
            return Err(WebConfigError::Tls(format!(
                "unknown TLS version {other:?} (TLS10, TLS11, TLS12 or TLS13)"
            )));
        }
    })
}

/// A Go cipher-suite name: `Some` TLS 1.2 suite rustls has, `None` for a TLS 1.3 suite.
fn cipher_suite(name: &str) -> Result<Option<CipherSuite>, WebConfigError> {
    use CipherSuite as S;
    Ok(Some(match name {
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305" | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" => {
            S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305" | "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" => {
            S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_AES_128_GCM_SHA256" | "TLS_AES_256_GCM_SHA384" | "TLS_CHACHA20_POLY1305_SHA256" => return Ok(None),
        // Names Go knows whose suites rustls does not implement (CBC modes, RSA key
        // exchange, 3DES, RC4): refused rather than silently left out.
        other if other.starts_with("TLS_RSA_") || other.starts_with("TLS_ECDHE_") => {
            return Err(WebConfigError::Tls(format!(
                "cipher suite {other} is not supported by rustls (only ECDHE with AES-GCM or ChaCha20-Poly1305)"
            )));
        }
        other => return Err(WebConfigError::Tls(format!("unknown cipher suite {other:?}"))),
    }))
}

fn curve(name: &str) -> Result<NamedGroup, WebConfigError> {
    match name {
        "CurveP256" => Ok(NamedGroup::secp256r1),
        "CurveP384" => Ok(NamedGroup::secp384r1),
        "X25519" => Ok(NamedGroup::X25519),
        "CurveP521" => Err(WebConfigError::Tls(
            "curve CurveP521 is not supported by rustls's ring provider (X25519, CurveP256, CurveP384)".into(),
        )),
        other => Err(WebConfigError::Tls(format!("unknown curve {other:?}"))),
    }
}

fn header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), WebConfigError> {
    let err = |s: String| WebConfigError::Http(s);
    let Some((canonical, allowed)) = HEADERS.iter().find(|(h, _)| *h == name) else {
        return Err(err(format!("HTTP header {name:?} can not be configured")));
    };
    if !allowed.is_empty() && !allowed.contains(&value) {
        return Err(err(format!(
            "invalid value for {name}: expected one of {allowed:?}, got {value:?}"
        )));
    }
    let header_name = HeaderName::from_static(match *canonical {
        "Strict-Transport-Security" => "strict-transport-security",
        "X-Content-Type-Options" => "x-content-type-options",
        "X-Frame-Options" => "x-frame-options",
        "X-XSS-Protection" => "x-xss-protection",
        _ => "content-security-policy",
    });
    let header_value = HeaderValue::from_str(value).map_err(|_| err(format!("invalid value for {name}")))?;
    Ok((header_name, header_value))
}

/// A bcrypt hash as the toolkit takes it (Go's bcrypt: `$2a$`, `$2b$`, `$2y$`, cost 4–31).
fn check_hash(hash: &str) -> Result<(), String> {
    let prefix_ok = ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p));
    if !prefix_ok {
        return Err("unknown prefix".into());
    }
    let parts: bcrypt::HashParts = hash.parse().map_err(|e: bcrypt::BcryptError| e.to_string())?;
    if !(4..=31).contains(&parts.get_cost()) {
        return Err(format!("cost {} out of range 4-31", parts.get_cost()));
    }
    Ok(())
}

fn rate_limit(file: RateLimitFile) -> Result<Option<RateLimit>, WebConfigError> {
    let err = |s: String| WebConfigError::RateLimit(s);
    let interval = match file.interval.as_deref() {
        None | Some("") | Some("0") | Some("0s") => return Ok(None),
        Some(text) => humantime::parse_duration(text).map_err(|e| err(format!("interval {text:?}: {e}")))?,
    };
    if interval.is_zero() {
        return Ok(None);
    }
    // Go's limiter with a burst of 0 allows nothing; a file that asks for that is a mistake.
    let burst = file.burst.unwrap_or(0);
    if burst == 0 {
        return Err(err("burst must be at least 1 when an interval is set".into()));
    }
    Ok(Some(RateLimit { interval, burst }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_files_mean_plain_http_without_authentication() {
        for text in ["", "\n", "# nothing\n", "{}\n", "~\n"] {
            assert_eq!(parse(text), Ok(WebSettings::default()), "{text:?}");
        }
        let only_empty_tls = parse("tls_server_config: {}\n").expect("parses");
        assert_eq!(only_empty_tls.tls, None);
    }

    #[test]
    fn a_node_exporter_file_parses() {
        let hash = bcrypt::hash("secret", 4).expect("hash");
        let text = format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: /etc/k.key\n  client_ca_file: ca.crt\n  \
             client_auth_type: RequireAndVerifyClientCert\n  min_version: TLS12\n  max_version: TLS13\n  \
             cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_AES_128_GCM_SHA256]\n  \
             curve_preferences: [X25519, CurveP256]\n  prefer_server_cipher_suites: false\n\
             http_server_config:\n  http2: true\n  headers:\n    X-Frame-Options: deny\n    Strict-Transport-Security: max-age=31536000\n\
             basic_auth_users:\n  prometheus: '{hash}'\n\
             rate_limit:\n  interval: 100ms\n  burst: 5\n"
        );
        let s = parse(&text).expect("parses").relative_to(Path::new("/etc/sonde"));
        let tls = s.tls.expect("tls");
        assert_eq!(tls.cert, Pem::File("/etc/sonde/server.crt".into()));
        assert_eq!(tls.key, Pem::File("/etc/k.key".into()));
        assert_eq!(tls.client_ca, Some(Pem::File("/etc/sonde/ca.crt".into())));
        assert_eq!(tls.client_auth, ClientAuth::RequireAndVerify);
        assert_eq!(tls.versions, [ProtocolVersion::TLSv1_2, ProtocolVersion::TLSv1_3]);
        assert_eq!(tls.cipher_suites, [CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]);
        assert_eq!(tls.curves, [NamedGroup::X25519, NamedGroup::secp256r1]);
        assert!(!tls.prefer_server_cipher_suites);
        assert_eq!(s.headers.len(), 2);
        assert_eq!(s.users.get("prometheus").map(String::as_str), Some(hash.as_str()));
        assert_eq!(
            s.rate_limit,
            Some(RateLimit {
                interval: Duration::from_millis(100),
                burst: 5
            })
        );
        assert!(s.warnings.is_empty());
    }

    #[test]
    fn what_rustls_cannot_honour_is_refused_with_the_reason() {
        let tls = |extra: &str| parse(&format!("tls_server_config:\n  cert_file: c\n  key_file: k\n{extra}"));
        for (extra, expect) in [
            ("  max_version: TLS11\n", "TLS 1.2 and 1.3 only"),
            ("  min_version: TLS13\n  max_version: TLS12\n", "above max_version"),
            ("  min_version: SSL3\n", "unknown TLS version"),
            (
                "  cipher_suites: [TLS_RSA_WITH_AES_128_CBC_SHA]\n",
                "not supported by rustls",
            ),
            ("  cipher_suites: [NOPE]\n", "unknown cipher suite"),
            ("  curve_preferences: [CurveP521]\n", "not supported"),
            ("  client_auth_type: RequireAnyClientCert\n", "not supported"),
            ("  client_auth_type: Sometimes\n", "invalid client_auth_type"),
            (
                "  client_auth_type: RequireAndVerifyClientCert\n",
                "needs client_ca_file",
            ),
            ("  client_ca_file: ca\n", "without a client_auth_type"),
            ("  client_allowed_sans: [a]\n", "requires client_auth_type"),
            (
                "  client_ca_file: ca\n  client_auth_type: RequireAndVerifyClientCert\n  client_allowed_sans: [a@b.c]\n",
                "only DNS names and IP addresses",
            ),
            ("  unknown_key: 1\n", "unknown field"),
        ] {
            let e = tls(extra).expect_err(extra).to_string();
            assert!(e.contains(expect), "{extra:?}: {e}");
        }
        let old = tls("  min_version: TLS10\n").expect("a lower minimum is served as TLS12");
        assert_eq!(old.tls.expect("tls").versions.len(), 2);
        assert_eq!(old.warnings.len(), 1);
        let e = parse("tls_server_config:\n  cert_file: c\n").expect_err("no key");
        assert!(e.to_string().contains("missing one of key"), "{e}");
        let only13 = tls("  min_version: TLS13\n").expect("parses");
        assert_eq!(only13.tls.expect("tls").versions, [ProtocolVersion::TLSv1_3]);
    }

    #[test]
    fn headers_hashes_and_limits_are_checked_without_quoting_secrets() {
        for (text, expect) in [
            (
                "http_server_config:\n  headers:\n    Server: x\n",
                "can not be configured",
            ),
            (
                "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
                "expected one of",
            ),
            ("basic_auth_users:\n  alice: plain-password\n", "user \"alice\""),
            ("basic_auth_users:\n  alice: $2b$99$abc\n", "user \"alice\""),
            ("rate_limit:\n  interval: 1s\n", "burst"),
            ("rate_limit:\n  interval: soon\n  burst: 1\n", "interval"),
            ("nonsense: 1\n", "unknown field"),
            ("- a list\n", "invalid type"),
        ] {
            let e = parse(text).expect_err(text).to_string();
            assert!(e.contains(expect), "{text:?}: {e}");
            assert!(!e.contains("plain-password"), "{e}");
        }
        assert_eq!(
            parse("rate_limit:\n  burst: 3\n").expect("no interval").rate_limit,
            None
        );
        assert!(parse_bytes(b"\xff\xfe").is_err());
    }
}
