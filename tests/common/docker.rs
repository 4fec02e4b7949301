//! Containers of the machine's Docker engine, for the tests that need a real one.

use std::process::{Command, Stdio};
use std::time::Duration;

/// A name no other test run on this machine uses.
pub fn unique_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// The image the Docker tests run: `/bin/busybox` and its applets `FROM scratch` (nothing
/// can be pulled here). Built once per test binary; `docker build` reuses its cache.
pub fn busybox_image() -> &'static str {
    const IMAGE: &str = "sonde-test-busybox:1";
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::copy("/bin/busybox", dir.path().join("busybox")).expect("copy /bin/busybox (busybox-static)");
        std::fs::write(
            dir.path().join("Dockerfile"),
            "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n",
        )
        .expect("write Dockerfile");
        let out = Command::new("docker")
            .args(["build", "-q", "-t", IMAGE])
            .arg(dir.path())
            .output()
            .expect("run docker build");
        assert!(
            out.status.success(),
            "docker build: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    IMAGE
}

/// A container started by a test; removed (with its processes) when dropped.
pub struct Container {
    pub id: String,
    pub name: String,
}

impl Container {
    /// `docker run -d` of the busybox image with a unique name and `sh -c script`.
    pub fn run(prefix: &str, extra: &[&str], script: &str) -> Container {
        let name = unique_name(prefix);
        let out = Command::new("docker")
            .args(["run", "-d", "--name", &name])
            .args(extra)
            .args([busybox_image(), "sh", "-c", script])
            .output()
            .expect("run docker");
        assert!(
            out.status.success(),
            "docker run: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        Container { id, name }
    }

    pub fn inspect(&self, format: &str) -> String {
        let out = Command::new("docker")
            .args(["inspect", "-f", format, &self.id])
            .output()
            .expect("run docker inspect");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    pub fn logs(&self) -> String {
        let out = Command::new("docker")
            .args(["logs", &self.id])
            .output()
            .expect("run docker logs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the container's output contains `text`.
    pub fn wait_for_log(&self, text: &str, limit: Duration) {
        let start = std::time::Instant::now();
        while !self.logs().contains(text) {
            assert!(
                start.elapsed() < limit,
                "{} never printed {text:?}: {}",
                self.name,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Whether a Docker engine answers. The test command starts one; without it a test is
/// skipped locally but fails under `CI=true`.
pub fn docker_or_skip(test: &str) -> bool {
    let answers = Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if answers {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test} needs a Docker engine, and under CI=true it must run: ./scripts/test starts one");
    }
    eprintln!("skipping {test}: no Docker engine answers");
    false
}
