//! A private Docker engine for tests that stop and restart it: its own socket, data root,
//! exec root (hence its own managed containerd), pid file, config file and bridge, and no
//! iptables rules, so it never touches the system engine that other tests use. Its
//! containers survive its restarts (`--live-restore`). Everything is removed on drop.
//!
//! Not `--bridge=none`: an engine started with it deletes the host's `docker0` (Moby's
//! `removeDefaultBridgeInterface`), which cuts the system engine's containers off.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{busybox_image, unique_name, wait_timeout};

pub struct PrivateDockerd {
    /// Short, under /run: containerd's socket path inside it must stay under 108 bytes.
    root: PathBuf,
    /// The engine's own bridge, made before it starts and deleted after it stops.
    bridge: String,
    child: Option<Child>,
    pub socket: PathBuf,
}

impl PrivateDockerd {
    /// Starts the engine, waits until it answers and loads the busybox test image into it.
    pub fn start() -> PrivateDockerd {
        let root = PathBuf::from("/run").join(unique_name("sdd"));
        std::fs::create_dir_all(&root).expect("create the private engine's directory");
        std::fs::write(root.join("daemon.json"), "{}\n").expect("write daemon.json");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let bridge = format!("sdd{}", nanos % 100_000_000);
        let subnet = format!("10.231.{}.1/24", nanos % 250);
        for args in [
            &["link", "add", &bridge, "type", "bridge"][..],
            &["addr", "add", &subnet, "dev", &bridge],
            &["link", "set", &bridge, "up"],
        ] {
            let status = Command::new("ip").args(args).status().expect("run ip");
            assert!(status.success(), "ip {args:?}");
        }
        let mut engine = PrivateDockerd {
            socket: root.join("docker.sock"),
            root,
            bridge,
            child: None,
        };
        engine.resume();
        let image = busybox_image();
        let mut save = Command::new("docker")
            .args(["save", image])
            .stdout(Stdio::piped())
            .spawn()
            .expect("run docker save");
        let load = Command::new("docker")
            .args(["-H", &engine.host(), "load", "-q"])
            .stdin(save.stdout.take().expect("piped stdout"))
            .output()
            .expect("run docker load");
        let saved = save.wait().expect("wait for docker save");
        assert!(saved.success(), "docker save {image}");
        assert!(
            load.status.success(),
            "loading the test image into the private engine: {}",
            String::from_utf8_lossy(&load.stderr)
        );
        engine
    }

    /// `unix://<socket>`, for `--docker.host` and `docker -H`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Whether the engine answers now.
    pub fn answers(&self) -> bool {
        self.docker(&["version", "--format", "{{.Server.Version}}"])
            .status
            .success()
    }

    /// Stops the engine (SIGTERM, as `systemctl stop docker`); its containers keep running.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            if wait_timeout(&mut child, Duration::from_secs(60)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Starts the engine again with the same state and waits until it answers.
    pub fn resume(&mut self) {
        if let Err(log) = self.try_resume() {
            panic!("the private dockerd did not answer; its log:\n{log}");
        }
    }

    fn try_resume(&mut self) -> Result<(), String> {
        let dir = |name: &str| self.root.join(name);
        let log = std::fs::File::create(dir("dockerd.log")).map_err(|e| e.to_string())?;
        let child = Command::new("dockerd")
            .arg(format!("--host={}", self.host()))
            .arg(format!("--data-root={}", dir("data").display()))
            .arg(format!("--exec-root={}", dir("x").display()))
            .arg(format!("--pidfile={}", dir("dockerd.pid").display()))
            .arg(format!("--config-file={}", dir("daemon.json").display()))
            .arg(format!("--bridge={}", self.bridge))
            .args([
                "--ip-forward=false",
                "--iptables=false",
                "--ip6tables=false",
                "--storage-driver=vfs",
                "--live-restore",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("start dockerd: {e}"))?;
        self.child = Some(child);
        let start = Instant::now();
        while !self.answers() {
            if start.elapsed() > Duration::from_secs(60) {
                return Err(std::fs::read_to_string(dir("dockerd.log")).unwrap_or_default());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// `docker -H <this engine> args…`.
    pub fn docker(&self, args: &[&str]) -> std::process::Output {
        Command::new("docker")
            .args(["-H", &self.host()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run docker: {e}"))
    }

    /// Runs `sh -c script` in a busybox container with a unique name; returns (id, name).
    /// Every container of this engine is removed when it is dropped.
    pub fn run(&self, prefix: &str, script: &str) -> (String, String) {
        let name = unique_name(prefix);
        let out = self.docker(&["run", "-d", "--name", &name, busybox_image(), "sh", "-c", script]);
        assert!(
            out.status.success(),
            "docker run on the private engine: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (String::from_utf8_lossy(&out.stdout).trim().to_owned(), name)
    }
}

impl Drop for PrivateDockerd {
    fn drop(&mut self) {
        // Bring a stopped engine back to remove its containers (a test failed meanwhile).
        if self.child.is_some() || self.try_resume().is_ok() {
            let ids = self.docker(&["ps", "-aq"]);
            for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
                let _ = self.docker(&["rm", "-f", id]);
            }
        }
        self.stop();
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).status();
        unmount_below(&self.root);
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Unmounts whatever the engine left mounted under `root` (deepest first).
fn unmount_below(root: &Path) {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let prefix = root.to_string_lossy().into_owned();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        let _ = Command::new("umount").args(["-l", point]).status();
    }
}
