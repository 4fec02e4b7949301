//! For the web-hardening tests: certificates made in the test (rcgen), a web config file in a
//! temporary directory, and plain HTTP/1.1 exchanges over TLS (rustls, ring) or plain TCP on
//! loopback, read to the end so the status line and the server's certificate can be checked.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A certificate authority made in the test.
pub struct Ca {
    pub pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

/// A certificate and its key, as PEM.
#[derive(Clone)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("CA certificate");
        Ca {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A server certificate for 127.0.0.1 and localhost.
    pub fn server(&self) -> Leaf {
        self.leaf(
            vec!["127.0.0.1".into(), "localhost".into()],
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    pub fn client(&self, name: &str) -> Leaf {
        self.leaf(vec![name.into()], rcgen::ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn leaf(&self, names: Vec<String>, usage: rcgen::ExtendedKeyUsagePurpose) -> Leaf {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(names).expect("params");
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.issuer).expect("certificate");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A bcrypt hash as `htpasswd -B` makes (cost 10 would be slow in a debug build; the
/// toolkit takes any cost from 4).
pub fn bcrypt_hash(password: &str) -> String {
    bcrypt::hash(password, 6).expect("bcrypt")
}

/// Writes `name` in `dir` atomically (a rename), as a certificate manager renews files.
pub fn write_atomically(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    let partial = dir.join(format!(".{name}.new"));
    std::fs::write(&partial, text).expect("write");
    std::fs::rename(&partial, &path).expect("rename");
    path
}

/// What an exchange got: the status code, the whole answer, the server's certificate.
pub struct Answer {
    pub status: u16,
    pub text: String,
    pub server_cert: Option<Vec<u8>>,
}

/// A client: the CA it trusts, and its own certificate when it has one.
pub struct TlsClient {
    config: Arc<rustls::ClientConfig>,
}

impl TlsClient {
    pub fn new(ca_pem: &str, identity: Option<&Leaf>) -> TlsClient {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(cert.expect("CA pem")).expect("add CA");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
        let config = match identity {
            None => builder.with_no_client_auth(),
            Some(leaf) => {
                let chain = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .expect("client cert");
                let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("client key");
                builder.with_client_auth_cert(chain, key).expect("client auth")
            }
        };
        TlsClient {
            config: Arc::new(config),
        }
    }

    /// `GET path` with basic credentials when given; Err with the reason when TLS fails.
    pub fn get(&self, addr: SocketAddr, path: &str, credentials: Option<(&str, &str)>) -> Result<Answer, String> {
        let name = ServerName::try_from("127.0.0.1").expect("server name");
        let conn = rustls::ClientConnection::new(Arc::clone(&self.config), name).map_err(|e| e.to_string())?;
        let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(Duration::from_secs(15))).expect("timeout");
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        tls.write_all(request(path, credentials).as_bytes())
            .map_err(|e| e.to_string())?;
        let mut bytes = Vec::new();
        let read = tls.read_to_end(&mut bytes);
        let server_cert = tls
            .conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec());
        if bytes.is_empty() {
            return Err(read.err().map_or("no answer".to_owned(), |e| e.to_string()));
        }
        let mut answer = parse(bytes);
        answer.server_cert = server_cert;
        Ok(answer)
    }
}

/// `GET path` over plain TCP.
pub fn plain_get(addr: SocketAddr, path: &str, credentials: Option<(&str, &str)>) -> Result<Answer, String> {
    let mut tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(15))).expect("timeout");
    tcp.write_all(request(path, credentials).as_bytes())
        .map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    let _ = tcp.read_to_end(&mut bytes);
    if bytes.is_empty() {
        return Err("no answer".into());
    }
    Ok(parse(bytes))
}

fn request(path: &str, credentials: Option<(&str, &str)>) -> String {
    let mut text = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some((user, password)) = credentials {
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        text.push_str(&format!("Authorization: Basic {encoded}\r\n"));
    }
    text.push_str("\r\n");
    text
}

fn parse(bytes: Vec<u8>) -> Answer {
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Answer {
        status,
        text,
        server_cert: None,
    }
}

/// The DER of a PEM certificate.
pub fn der(cert_pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .expect("cert pem")
        .as_ref()
        .to_vec()
}

/// Open descriptors of a process.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Raises this process's soft open-file limit to at least `wanted` (the hard one too when
/// root); returns the soft limit now in force.
pub fn raise_own_fd_limit(wanted: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid rlimit pointers.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        if limit.rlim_max < wanted {
            let raised = libc::rlimit {
                rlim_cur: wanted,
                rlim_max: wanted,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
        if limit.rlim_cur < wanted.min(limit.rlim_max) {
            limit.rlim_cur = wanted.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    limit.rlim_cur
}
