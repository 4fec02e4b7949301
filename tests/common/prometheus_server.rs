//! A real Prometheus (Debian's `prometheus`) started by a test: generated config, scrape
//! every second, its own temporary directory and free port, killed when dropped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Prometheus {
    child: Child,
    pub url: String,
    dir: tempfile::TempDir,
}

/// A port nobody listens on now (the kernel's next ephemeral port).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

impl Prometheus {
    /// Scrapes `targets` (job `sonde`) every second and evaluates `rule_files` every second.
    pub fn start(targets: &[SocketAddr], rule_files: &[PathBuf]) -> Prometheus {
        Self::start_jobs(&[("sonde", targets)], rule_files)
    }

    /// Scrapes each job's targets (`job_name`, `/metrics`) every second and evaluates
    /// `rule_files` every second.
    pub fn start_jobs(jobs: &[(&str, &[SocketAddr])], rule_files: &[PathBuf]) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        let rules: Vec<String> = rule_files.iter().map(|r| format!("'{}'", r.display())).collect();
        let mut config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files: [{}]\n\
             scrape_configs:\n",
            rules.join(", "),
        );
        for (job, targets) in jobs {
            let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
            config.push_str(&format!(
                "  - job_name: '{job}'\n    metrics_path: /metrics\n    \
                 static_configs:\n      - targets: [{}]\n",
                targets.join(", ")
            ));
        }
        Self::launch(dir, &config)
    }

    /// Scrapes every second with the given `scrape_configs` entries (YAML list items, each
    /// starting `  - job_name:`), e.g. with `scheme: https`, `tls_config` and `basic_auth`.
    pub fn start_scrape_configs(scrape_configs: &str) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n{scrape_configs}"
        );
        Self::launch(dir, &config)
    }

    fn launch(dir: tempfile::TempDir, config: &str) -> Prometheus {
        let binary = super::require_tool("prometheus");
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let address = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={address}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let prometheus = Prometheus {
            child,
            url: format!("http://{address}"),
            dir,
        };
        prometheus.wait_ready();
        prometheus
    }

    fn wait_ready(&self) {
        let start = Instant::now();
        loop {
            if self.answers_ready() {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "Prometheus never got ready; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `GET /-/ready` answered 200 (a plain HTTP/1.0 exchange: no runtime needed here).
    fn answers_ready(&self) -> bool {
        use std::io::{Read, Write};
        let address = self.url.trim_start_matches("http://");
        let Ok(mut stream) = std::net::TcpStream::connect(address) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        if stream.write_all(b"GET /-/ready HTTP/1.0\r\n\r\n").is_err() {
            return false;
        }
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// Waits until `promql` returns at least `at_least` series; fails the test with the
    /// Prometheus log after `limit`.
    pub async fn wait_for(&self, promql: &str, at_least: usize, limit: std::time::Duration) -> Vec<serde_json::Value> {
        let start = std::time::Instant::now();
        loop {
            if let Ok(result) = self.query(promql).await
                && result.len() >= at_least
            {
                return result;
            }
            assert!(
                start.elapsed() < limit,
                "{promql} never returned {at_least} series; Prometheus log:\n{}",
                self.log()
            );
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }

    /// An instant query through the HTTP API: the result vector, or the API's error.
    pub async fn query(&self, promql: &str) -> Result<Vec<serde_json::Value>, String> {
        self.query_url(format!("{}/api/v1/query?query={}", self.url, percent_encode(promql)))
            .await
    }

    /// An instant query evaluated at `time` (seconds since the epoch).
    pub async fn query_at(&self, promql: &str, time: f64) -> Result<Vec<serde_json::Value>, String> {
        self.query_url(format!(
            "{}/api/v1/query?query={}&time={time:.3}",
            self.url,
            percent_encode(promql)
        ))
        .await
    }

    async fn query_url(&self, url: String) -> Result<Vec<serde_json::Value>, String> {
        let response = reqwest::get(url).await.map_err(|e| format!("request: {e}"))?;
        let text = response.text().await.map_err(|e| format!("answer: {e}"))?;
        let body: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("answer {text:?}: {e}"))?;
        if body["status"] != "success" {
            return Err(format!("{}: {}", body["errorType"], body["error"]));
        }
        match body["data"]["resultType"].as_str() {
            Some("vector") | Some("matrix") => Ok(body["data"]["result"].as_array().cloned().unwrap_or_default()),
            Some("scalar") | Some("string") => Ok(vec![body["data"]["result"].clone()]),
            other => Err(format!("unexpected result type {other:?}")),
        }
    }

    /// The rules Prometheus loaded, as its API lists them.
    pub async fn rules(&self) -> Vec<serde_json::Value> {
        let text = reqwest::get(format!("{}/api/v1/rules", self.url))
            .await
            .expect("GET /api/v1/rules")
            .text()
            .await
            .expect("rules answer");
        let body: serde_json::Value = serde_json::from_str(&text).expect("rules JSON");
        body["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A query-string value: unreserved characters as they are, every other byte as %XX.
fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
