//! A stand-in Docker engine: HTTP/1.1 on a Unix socket, answering what sonde's watcher asks
//! (`/_ping`, `/version`, the container list, inspect, and `/events`, which it holds open)
//! for a fixed set of running containers. Every request's path is recorded.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;

/// One running container as the engine describes it.
#[derive(Debug, Clone)]
pub struct FakeContainer {
    /// 64 hex digits.
    pub id: String,
    /// Without the leading `/`.
    pub name: String,
    pub image: String,
    pub labels: Vec<(&'static str, &'static str)>,
    /// `NAME=value` entries.
    pub env: Vec<&'static str>,
    /// `starting`, `healthy` or `unhealthy`; `None` for no health check.
    pub health: Option<&'static str>,
}

/// The engine; stops accepting when dropped.
pub struct FakeDocker {
    socket: PathBuf,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl FakeDocker {
    /// Listens on `socket` (a path that does not exist yet).
    pub fn start(socket: &Path, containers: Vec<FakeContainer>) -> FakeDocker {
        let listener = UnixListener::bind(socket).expect("bind the fake Docker socket");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let containers = Arc::new(containers);
        let (seen, stopped) = (Arc::clone(&requests), Arc::clone(&stop));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (containers, seen) = (Arc::clone(&containers), Arc::clone(&seen));
                std::thread::spawn(move || serve(stream, &containers, &seen));
            }
        });
        FakeDocker {
            socket: socket.to_owned(),
            requests,
            stop,
        }
    }

    /// The `--docker.host` value.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// The paths (without the API version prefix and the query) asked for so far.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for FakeDocker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = UnixStream::connect(&self.socket); // wakes the accept loop
    }
}

/// Answers one request; the connection is closed after it, except `/events`, which stays
/// open (with no event) until the client goes away.
fn serve(mut stream: UnixStream, containers: &[FakeContainer], seen: &Mutex<Vec<String>>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let target = head.split_whitespace().nth(1).unwrap_or("");
    let path = target.split('?').next().unwrap_or("");
    // `/v1.47/containers/json` → `/containers/json`.
    let path = match path.strip_prefix("/v") {
        Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit()) => {
            rest.find('/').map_or("/", |slash| &rest[slash..])
        }
        _ => path,
    }
    .to_owned();
    seen.lock().unwrap_or_else(|p| p.into_inner()).push(path.clone());

    let (status, body) = match path.split('/').collect::<Vec<_>>().as_slice() {
        ["", "_ping"] => (200, "OK".to_owned()),
        ["", "version"] => (
            200,
            json!({
                "Version": "27.5.1", "ApiVersion": "1.47", "MinAPIVersion": "1.24",
                "Os": "linux", "Arch": "amd64", "KernelVersion": "6.1.0", "GitCommit": "4c9b3b0"
            })
            .to_string(),
        ),
        ["", "containers", "json"] => (
            200,
            serde_json::Value::Array(containers.iter().map(summary).collect()).to_string(),
        ),
        ["", "containers", id, "json"] => match containers.iter().find(|c| c.id == *id) {
            Some(container) => (200, inspect(container).to_string()),
            None => (404, json!({"message": format!("No such container: {id}")}).to_string()),
        },
        ["", "events"] => {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
            if stream.write_all(head.as_bytes()).is_ok() {
                // Held open: returns when sonde closes its end.
                while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
            }
            return;
        }
        _ => (404, json!({"message": "page not found"}).to_string()),
    };
    let reply = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nApi-Version: 1.47\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(reply.as_bytes());
}

fn labels(container: &FakeContainer) -> serde_json::Value {
    container
        .labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// An entry of `GET /containers/json`.
fn summary(container: &FakeContainer) -> serde_json::Value {
    json!({
        "Id": container.id,
        "Names": [format!("/{}", container.name)],
        "Image": container.image,
        "ImageID": format!("sha256:{}", "7".repeat(64)),
        "Command": "/bin/sh -c 'sleep infinity'",
        "Created": 1_795_000_000,
        "Labels": labels(container),
        "State": "running",
        "Status": "Up 5 minutes"
    })
}

/// `GET /containers/<id>/json`.
fn inspect(container: &FakeContainer) -> serde_json::Value {
    let mut state = json!({
        "Status": "running", "Running": true, "Paused": false, "Restarting": false,
        "OOMKilled": false, "Dead": false, "ExitCode": 0,
        "StartedAt": "2026-11-23T10:00:00.000000000Z", "FinishedAt": "0001-01-01T00:00:00Z"
    });
    if let Some(health) = container.health {
        state["Health"] = json!({"Status": health, "FailingStreak": 0, "Log": []});
    }
    json!({
        "Id": container.id,
        "Created": "2026-11-23T09:59:58.000000000Z",
        "Path": "/bin/sh",
        "Args": ["-c", "sleep infinity"],
        "State": state,
        "Image": format!("sha256:{}", "7".repeat(64)),
        "Name": format!("/{}", container.name),
        "RestartCount": 0,
        "Driver": "overlay2",
        "Config": {
            "Hostname": &container.id[..12],
            "Env": container.env,
            "Cmd": ["/bin/sh", "-c", "sleep infinity"],
            "Image": container.image,
            "Labels": labels(container)
        },
        "HostConfig": {"NetworkMode": "bridge", "CgroupParent": ""}
    })
}
