//! `--web.config.file` on the real binary, over loopback: TLS with basic authentication
//! (right password 200, wrong or none 401, plain HTTP no metrics), a changed password and a
//! renewed certificate taking effect without a restart, a broken new file keeping the last
//! good one, client certificates when the file asks for them (and `client_allowed_sans`),
//! SIGHUP re-reading the file
//! instead of stopping sonde, and a real Prometheus scraping with `tls_config` and
//! `basic_auth`. Certificates are made in the test (rcgen); no password reaches the log.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::prometheus_server::Prometheus;
use common::web::*;
use common::*;

const HOST_ONLY: &[&str] = &["--no-collector.container", "--no-collector.connection", "--no-docker"];
const USER: &str = "prometheus";
const PASSWORD: &str = "correct-horse-battery";
const NEW_PASSWORD: &str = "staple-renewed-2";

/// A web config directory: the CA, the server's certificate and key, the config file.
struct Site {
    dir: tempfile::TempDir,
    ca: Ca,
}

impl Site {
    fn new() -> Site {
        let site = Site {
            dir: tempfile::tempdir().expect("tempdir"),
            ca: Ca::new("sonde test CA"),
        };
        site.renew_certificate();
        site
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A new server certificate and key (a new key pair, as a renewal makes); returns the
    /// certificate's DER.
    fn renew_certificate(&self) -> Vec<u8> {
        let leaf = self.ca.server();
        // Key first: a reader that catches the two files between writes sees a mismatch
        // (refused, the old pair stays) rather than a wrong key in use.
        write_atomically(self.path(), "server.key", &leaf.key_pem);
        write_atomically(self.path(), "server.crt", &leaf.cert_pem);
        der(&leaf.cert_pem)
    }

    /// Writes the config file: relative file names, as a node_exporter file has them.
    fn write_config(&self, extra_tls: &str, hash: &str) -> String {
        let text = format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n{extra_tls}\
             http_server_config:\n  headers:\n    X-Frame-Options: deny\n    X-Content-Type-Options: nosniff\n\
             basic_auth_users:\n  {USER}: '{hash}'\n"
        );
        write_atomically(self.path(), "web.yml", &text)
            .to_str()
            .expect("utf-8")
            .to_owned()
    }
}

fn start(config: &str) -> Sonde {
    let mut args = HOST_ONLY.to_vec();
    let flag = format!("--web.config.file={config}");
    args.push(&flag);
    Sonde::start(&args)
}

/// Every log line sonde wrote so far.
fn drain_log(sonde: &Sonde) -> String {
    let mut text = String::new();
    while let Ok(line) = sonde.log.recv_timeout(Duration::from_millis(300)) {
        text.push_str(&line);
        text.push('\n');
    }
    text
}

/// Polls `check` every 100 ms for up to 10 s (the file is compared every second).
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if check() {
            println!("{what}: after {:?}", start.elapsed());
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what}: not within 10 s");
}

#[test]
fn tls_and_basic_auth_let_in_only_the_right_password() {
    let site = Site::new();
    let config = site.write_config("", &bcrypt_hash(PASSWORD));
    let sonde = start(&config);
    let client = TlsClient::new(&site.ca.pem, None);

    let ok = client.get(sonde.addr, "/metrics", Some((USER, PASSWORD))).expect("TLS");
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert!(
        ok.text.contains("\nsonde_collector_success{collector=\"host\"} 1\n"),
        "{}",
        ok.text
    );
    assert!(ok.text.contains("\r\nx-frame-options: deny\r\n"), "{}", ok.text);
    assert!(
        ok.text.contains("\r\nx-content-type-options: nosniff\r\n"),
        "{}",
        ok.text
    );
    for (credentials, what) in [
        (Some((USER, "wrong")), "wrong password"),
        (Some(("nobody", PASSWORD)), "unknown user"),
        (None, "no credentials"),
    ] {
        let denied = client.get(sonde.addr, "/metrics", credentials).expect("TLS");
        assert_eq!(denied.status, 401, "{what}: {}", denied.text);
        assert!(
            denied.text.contains("\r\nwww-authenticate: Basic\r\n"),
            "{what}: {}",
            denied.text
        );
        assert!(!denied.text.contains("sonde_"), "{what}: {}", denied.text);
    }
    // The same wrong password again: answered from the cache, still 401.
    let again = client.get(sonde.addr, "/metrics", Some((USER, "wrong"))).expect("TLS");
    assert_eq!(again.status, 401);
    // Every path is behind the password, as with the toolkit.
    assert_eq!(client.get(sonde.addr, "/", None).expect("TLS").status, 401);

    // Plain HTTP on the TLS port: a 400 that says why, and no metrics.
    let plain = plain_get(sonde.addr, "/metrics", Some((USER, PASSWORD))).expect("an answer");
    assert_eq!(plain.status, 400, "{}", plain.text);
    assert!(
        plain.text.contains("Client sent an HTTP request to an HTTPS server."),
        "{}",
        plain.text
    );
    assert!(!plain.text.contains("sonde_"), "{}", plain.text);

    let log = drain_log(&sonde);
    assert!(
        !log.contains(PASSWORD) && !log.contains("wrong"),
        "a password in the log:\n{log}"
    );
}

#[test]
fn a_changed_password_and_a_renewed_certificate_apply_without_a_restart() {
    let site = Site::new();
    let config = site.write_config("", &bcrypt_hash(PASSWORD));
    let sonde = start(&config);
    let first_cert = der(&std::fs::read_to_string(site.path().join("server.crt")).expect("cert"));
    let client = TlsClient::new(&site.ca.pem, None);
    let answer = client.get(sonde.addr, "/metrics", Some((USER, PASSWORD))).expect("TLS");
    assert_eq!(
        (answer.status, answer.server_cert.as_deref()),
        (200, Some(&first_cert[..]))
    );

    // A new password in the file: the old one stops working, the new one works.
    site.write_config("", &bcrypt_hash(NEW_PASSWORD));
    eventually("new password accepted", || {
        client
            .get(sonde.addr, "/metrics", Some((USER, NEW_PASSWORD)))
            .is_ok_and(|a| a.status == 200)
    });
    let old = client.get(sonde.addr, "/metrics", Some((USER, PASSWORD))).expect("TLS");
    assert_eq!(old.status, 401);

    // A renewed certificate: new connections get it.
    let renewed = site.renew_certificate();
    assert_ne!(renewed, first_cert);
    eventually("renewed certificate served", || {
        client
            .get(sonde.addr, "/metrics", Some((USER, NEW_PASSWORD)))
            .is_ok_and(|a| a.status == 200 && a.server_cert.as_deref() == Some(&renewed[..]))
    });

    // A broken file: refused once in the log, the last good configuration stays.
    write_atomically(
        site.path(),
        "web.yml",
        "tls_server_config:\n  cert_file: [not, a, path]\n",
    );
    let refused = sonde.wait_for_log(&["web config not reloaded"]);
    assert!(
        refused.contains("tls_server_config") || refused.contains("invalid type"),
        "{refused}"
    );
    std::thread::sleep(Duration::from_millis(2500));
    let still = client
        .get(sonde.addr, "/metrics", Some((USER, NEW_PASSWORD)))
        .expect("TLS");
    assert_eq!((still.status, still.server_cert.as_deref()), (200, Some(&renewed[..])));
    let log = drain_log(&sonde);
    assert_eq!(
        log.matches("web config not reloaded").count(),
        0,
        "a broken file is reported once, not at every check:\n{log}"
    );
    assert!(!log.contains(PASSWORD) && !log.contains(NEW_PASSWORD), "{log}");
}

#[test]
fn client_certificates_are_required_when_the_file_asks() {
    let site = Site::new();
    write_atomically(site.path(), "clients.crt", &site.ca.pem);
    let config = site.write_config(
        "  client_ca_file: clients.crt\n  client_auth_type: RequireAndVerifyClientCert\n",
        &bcrypt_hash(PASSWORD),
    );
    let sonde = start(&config);

    let with_cert = TlsClient::new(&site.ca.pem, Some(&site.ca.client("scraper")));
    let ok = with_cert
        .get(sonde.addr, "/metrics", Some((USER, PASSWORD)))
        .expect("TLS");
    assert_eq!(ok.status, 200, "{}", ok.text);

    let without = TlsClient::new(&site.ca.pem, None);
    let refused = without.get(sonde.addr, "/metrics", Some((USER, PASSWORD)));
    assert!(refused.is_err(), "no client certificate: {:?}", refused.map(|a| a.text));

    let stranger = Ca::new("another CA");
    let foreign = TlsClient::new(&site.ca.pem, Some(&stranger.client("intruder")));
    let refused = foreign.get(sonde.addr, "/metrics", Some((USER, PASSWORD)));
    assert!(
        refused.is_err(),
        "a certificate of another CA: {:?}",
        refused.map(|a| a.text)
    );

    // client_allowed_sans: of two clients of the same CA, only the one named gets in.
    let named = TlsClient::new(&site.ca.pem, Some(&site.ca.client("scraper.example")));
    let other = TlsClient::new(&site.ca.pem, Some(&site.ca.client("other.example")));
    let before = other.get(sonde.addr, "/metrics", Some((USER, PASSWORD)));
    assert_eq!(before.map(|a| a.status), Ok(200));
    site.write_config(
        "  client_ca_file: clients.crt\n  client_auth_type: RequireAndVerifyClientCert\n  \
         client_allowed_sans: [scraper.example]\n",
        &bcrypt_hash(PASSWORD),
    );
    eventually("only the named client gets in", || {
        other.get(sonde.addr, "/metrics", Some((USER, PASSWORD))).is_err()
    });
    let ok = named.get(sonde.addr, "/metrics", Some((USER, PASSWORD))).expect("TLS");
    assert_eq!(ok.status, 200, "{}", ok.text);
}

#[test]
fn sighup_rereads_the_web_config_and_keeps_sonde_running() {
    let site = Site::new();
    let config = site.write_config("", &bcrypt_hash(PASSWORD));
    let mut sonde = start(&config);
    let client = TlsClient::new(&site.ca.pem, None);
    let status = std::process::Command::new("kill")
        .args(["-HUP", &sonde.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    sonde.wait_for_log(&["SIGHUP"]);
    sonde.wait_for_log(&["web config loaded"]);
    assert!(sonde.child.try_wait().expect("wait").is_none(), "SIGHUP stopped sonde");
    let ok = client.get(sonde.addr, "/metrics", Some((USER, PASSWORD))).expect("TLS");
    assert_eq!(ok.status, 200);
}

#[test]
fn a_broken_web_config_file_stops_the_start_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (text, expect) in [
        (
            "tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n",
            "missing.crt",
        ),
        ("basic_auth_users:\n  alice: plain-text\n", "not a bcrypt hash"),
        (
            "tls_server_config:\n  cert_file: c\n  key_file: k\n  max_version: TLS11\n",
            "TLS 1.2 and 1.3 only",
        ),
    ] {
        let file = write_atomically(dir.path(), "web.yml", text);
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_sonde"))
            .args(HOST_ONLY)
            .arg("--web.listen-address=127.0.0.1:0")
            .arg(format!("--web.config.file={}", file.display()))
            .output()
            .expect("run sonde");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{text:?}: {stderr}");
        assert!(stderr.contains(expect), "{text:?}: {stderr}");
        assert!(!stderr.contains("plain-text"), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_over_tls_with_basic_auth() {
    require_tool("prometheus");
    let site = Site::new();
    let config = site.write_config("", &bcrypt_hash(PASSWORD));
    let sonde = start(&config);
    write_atomically(site.path(), "ca.crt", &site.ca.pem);
    let ca_file = site.path().join("ca.crt");
    let job = |name: &str, password: &str| {
        format!(
            "  - job_name: '{name}'\n    scheme: https\n    metrics_path: /metrics\n    \
             tls_config:\n      ca_file: '{ca}'\n      server_name: '127.0.0.1'\n    \
             basic_auth:\n      username: '{USER}'\n      password: '{password}'\n    \
             static_configs:\n      - targets: ['{addr}']\n",
            ca = ca_file.display(),
            addr = sonde.addr,
        )
    };
    let prometheus =
        Prometheus::start_scrape_configs(&format!("{}{}", job("sonde_tls", PASSWORD), job("sonde_wrong", "nope")));
    let up = prometheus
        .wait_for("up{job=\"sonde_tls\"} == 1", 1, Duration::from_secs(30))
        .await;
    assert_eq!(up.len(), 1, "{up:?}");
    let host = prometheus
        .wait_for(
            "sonde_collector_success{job=\"sonde_tls\",collector=\"host\"} == 1",
            1,
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(host.len(), 1, "{host:?}");
    // The wrong password: Prometheus gets 401, so the target is down.
    let down = prometheus
        .wait_for("up{job=\"sonde_wrong\"} == 0", 1, Duration::from_secs(30))
        .await;
    assert_eq!(down.len(), 1, "{down:?}");
    let no_metrics = prometheus
        .query("sonde_collector_success{job=\"sonde_wrong\"}")
        .await
        .expect("query");
    assert!(no_metrics.is_empty(), "{no_metrics:?}");
}

#[test]
fn a_flood_of_wrong_passwords_costs_one_bcrypt_at_a_time_and_leaves_the_scraper_in() {
    let site = Site::new();
    // Cost 10, as `htpasswd -B` makes by default.
    let config = site.write_config("", &bcrypt::hash(PASSWORD, 10).expect("bcrypt"));
    let sonde = start(&config);
    let client = std::sync::Arc::new(TlsClient::new(&site.ca.pem, None));
    let first = Instant::now();
    assert_eq!(
        client
            .get(sonde.addr, "/metrics", Some((USER, PASSWORD)))
            .expect("TLS")
            .status,
        200
    );
    println!("first scrape (one bcrypt check): {:?}", first.elapsed());

    let addr = sonde.addr;
    let attackers: Vec<_> = (0..8)
        .map(|t| {
            let client = std::sync::Arc::clone(&client);
            std::thread::spawn(move || {
                let mut statuses = Vec::new();
                for i in 0..10 {
                    let wrong = format!("guess-{t}-{i}");
                    if let Ok(answer) = client.get(addr, "/metrics", Some((USER, &wrong))) {
                        statuses.push(answer.status);
                    }
                }
                statuses
            })
        })
        .collect();
    let mut scrapes = Vec::new();
    while !attackers.iter().all(|a| a.is_finished()) && scrapes.len() < 20 {
        let start = Instant::now();
        let answer = client.get(sonde.addr, "/metrics", Some((USER, PASSWORD))).expect("TLS");
        assert_eq!(answer.status, 200, "the scraper's cached credentials: {}", answer.text);
        scrapes.push(start.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    let statuses: Vec<u16> = attackers
        .into_iter()
        .flat_map(|a| a.join().expect("attacker"))
        .collect();
    let denied = statuses.iter().filter(|s| **s == 401).count();
    let busy = statuses.iter().filter(|s| **s == 429).count();
    println!(
        "80 distinct wrong passwords from 8 clients: {denied} answered 401, {busy} 429 (bcrypt busy); \
         meanwhile {} scrapes with the right password, 200 each, in {scrapes:?}",
        scrapes.len()
    );
    assert_eq!(denied + busy, statuses.len(), "{statuses:?}");
    assert_eq!(statuses.len(), 80);
    assert!(!scrapes.is_empty());
}
