//! Helpers shared by the integration tests: the real binary on an ephemeral port, the
//! external checkers (promtool, Python's OpenMetrics parser), and small parsers.
#![allow(dead_code)] // each test crate uses its own subset

pub mod dockerd;
pub mod fake_docker;
pub mod kit;
pub mod kubelet;
pub mod netns;
pub mod prometheus_server;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const OPENMETRICS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
pub const PROTOBUF_ACCEPT: &str =
    "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.9,*/*;q=0.1";

/// A running `sonde` process, killed when dropped.
pub struct Sonde {
    pub child: Child,
    pub addr: SocketAddr,
    /// Log lines after the "listening" one.
    pub log: mpsc::Receiver<String>,
}

impl Sonde {
    /// Starts the binary on 127.0.0.1 with an ephemeral port and waits until it listens.
    pub fn start(args: &[&str]) -> Sonde {
        Self::start_with_env(args, &[])
    }

    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Sonde {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sonde"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self::start_command(cmd, args)
    }

    /// Starts the binary as another user (the caller must be root).
    pub fn start_as_user(args: &[&str], uid: u32) -> Sonde {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sonde"));
        cmd.uid(uid).gid(uid);
        Self::start_command(cmd, args)
    }

    /// Starts `cmd` (the binary, set up by the caller) with `args` on an ephemeral port.
    pub fn start_command(mut cmd: Command, args: &[&str]) -> Sonde {
        cmd.arg("--web.listen-address=127.0.0.1:0")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start sonde");
        let stderr = child.stderr.take().expect("piped stderr");
        let (addr, log) = wait_for_listening(stderr);
        let addr = addr.unwrap_or_else(|lines| {
            let _ = child.kill();
            panic!("sonde did not report a listening address; its log:\n{lines}")
        });
        Sonde { child, addr, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        wait_timeout(&mut self.child, Duration::from_secs(20)).expect("sonde exits after SIGTERM")
    }
}

impl Drop for Sonde {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads stderr until the `listening` line; the rest keeps flowing into a channel.
fn wait_for_listening(stderr: ChildStderr) -> (Result<SocketAddr, String>, mpsc::Receiver<String>) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => {
                seen.push_str(&line);
                seen.push('\n');
                if line.contains("message=listening") {
                    let addr = line
                        .split_whitespace()
                        .find_map(|field| field.strip_prefix("address="))
                        .and_then(|a| a.parse().ok());
                    return (addr.ok_or(seen), rx);
                }
            }
            Err(_) => return (Err(seen), rx),
        }
    }
}

pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Raises this process's soft limit on open files to the hard one, for tests and benchmarks
/// that hold more sockets than a default soft limit (1,024) allows (raising the hard one
/// needs CAP_SYS_RESOURCE, which containers often drop); returns the new limit.
pub fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid rlimit pointers; the soft limit only rises to the hard one.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    limit.rlim_cur
}

/// An external tool the README's test command installs; missing means a broken setup, so
/// the test fails rather than skips.
pub fn require_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("{name} is not installed: run ./scripts/test, which installs what the tests need"))
}

fn run_with_stdin(program: &str, args: &[&str], input: &[u8]) -> std::process::Output {
    let mut child = Command::new(require_tool(program))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {program}: {e}"));
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input)
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

/// `promtool check metrics` on a text exposition: returns what it complained about.
pub fn promtool_check_metrics(text: &[u8]) -> (bool, String) {
    let out = run_with_stdin("promtool", &["check", "metrics"], text);
    let complaints = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), complaints)
}

/// Parses an OpenMetrics exposition with Python's `prometheus_client` (strict parser) and
/// returns one line per family, `name type samples`, or the parser's error.
pub fn python_openmetrics_families(text: &[u8]) -> Result<Vec<String>, String> {
    const SCRIPT: &str = "import sys\n\
from prometheus_client.openmetrics.parser import text_string_to_metric_families\n\
for f in text_string_to_metric_families(sys.stdin.read()):\n    print(f.name, f.type, len(f.samples))\n";
    let out = run_with_stdin("python3", &["-c", SCRIPT], text);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The value of the first text-format sample whose series (name and labels) equals `series`.
pub fn sample_value(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

/// The names of the families (`# TYPE` lines) of a text exposition.
pub fn family_names(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// `MemTotal` of this machine in bytes, and its online logical CPUs as `getconf` says.
pub fn host_truth() -> (f64, f64) {
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("read /proc/meminfo");
    let kb: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("MemTotal in /proc/meminfo");
    let getconf = Command::new("getconf")
        .arg("_NPROCESSORS_ONLN")
        .output()
        .expect("run getconf");
    let cpus: f64 = String::from_utf8_lossy(&getconf.stdout)
        .trim()
        .parse()
        .expect("getconf prints a number");
    (kb * 1024.0, cpus)
}

/// Whether this test can run as root. Without root it is skipped locally, but fails under
/// `CI=true`, where every test must run.
pub fn root_or_skip(test: &str) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u32>().ok());
    if euid == Some(0) {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test} needs root, and under CI=true it must run: run the tests as root");
    }
    eprintln!("skipping {test}: it needs root");
    false
}

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

/// The label set of a `container_*` series, sorted by name as sonde writes it: the six
/// container labels (names unknown: empty) plus the family's own.
pub fn container_labels(id: &str, extra: &[(&str, &str)]) -> String {
    named_container_labels(id, "", "", extra)
}

/// The families of a length-delimited protobuf exposition, in order.
pub fn decode_protobuf(body: &[u8]) -> Vec<prometheus::proto::MetricFamily> {
    let mut input = protobuf::CodedInputStream::from_bytes(body);
    let mut families = Vec::new();
    while !input.eof().expect("readable") {
        families.push(input.read_message().expect("a delimited MetricFamily"));
    }
    families
}

/// A fake host of `count` Docker containers (`/docker/<seed as 64 hex>`, seeded values) in
/// the given cgroup version, and the configuration that points sonde at it.
pub fn fake_forest(dir: &std::path::Path, version: &str, count: u64, flags: &[&str]) -> sonde::config::Config {
    use sonde::cgroup::fixture::{FakeCgroup, write_v1, write_v2};
    let sysfs = dir.join("sys");
    for seed in 0..count {
        let cgroup = FakeCgroup::seeded(format!("/docker/{seed:064x}"), seed);
        match version {
            "v2" => write_v2(&sysfs, &cgroup),
            _ => write_v1(&sysfs, &cgroup),
        }
        .expect("write the fake cgroup");
    }
    std::fs::create_dir_all(dir.join("proc")).expect("mkdir");
    let args = [
        "sonde".to_owned(),
        format!("--path.sysfs={}", sysfs.display()),
        format!("--path.procfs={}", dir.join("proc").display()),
    ];
    sonde::config::from_args(args.into_iter().chain(flags.iter().map(|f| (*f).to_owned()))).expect("config")
}

/// The label set of a `container_*` series of a named container (a Docker one): the six
/// container labels with its name and image, plus `extra` (the family's own labels and any
/// `container_label_*`), sorted by name as sonde writes them.
pub fn named_container_labels(id: &str, name: &str, image: &str, extra: &[(&str, &str)]) -> String {
    let mut labels: Vec<(&str, &str)> = vec![
        ("container", ""),
        ("id", id),
        ("image", image),
        ("name", name),
        ("namespace", ""),
        ("pod", ""),
    ];
    labels.extend_from_slice(extra);
    labels.sort_unstable();
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{{{}}}", inner.join(","))
}

/// Parses an exposition with Python's `prometheus_client` (the strict OpenMetrics parser,
/// or the text 0.0.4 one) and returns, for each sample of `family` (the name as the parser
/// reports it) whose `name` label is `container`, the value of `label` as the parser read it.
pub fn python_label_values(
    text: &[u8],
    openmetrics: bool,
    family: &str,
    container: &str,
    label: &str,
) -> Result<Vec<String>, String> {
    // (Lines joined with `concat!`: a `\` line continuation would eat the indentation.)
    const SCRIPT: &str = concat!(
        "import sys\n",
        "from prometheus_client.openmetrics.parser import text_string_to_metric_families as om\n",
        "from prometheus_client.parser import text_string_to_metric_families as text\n",
        "parse = om if sys.argv[1] == 'om' else text\n",
        "for f in parse(sys.stdin.read()):\n",
        "    if f.name == sys.argv[2]:\n",
        "        for s in f.samples:\n",
        "            if s.labels.get('name') == sys.argv[3]:\n",
        "                print((s.labels.get(sys.argv[4]) or '').encode().hex())\n",
    );
    let mode = if openmetrics { "om" } else { "text" };
    let out = run_with_stdin("python3", &["-c", SCRIPT, mode, family, container, label], text);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    // One value a line, as hex of its UTF-8 bytes: nothing in it needs unescaping.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|hex| {
            let bytes: Option<Vec<u8>> = (0..hex.len())
                .step_by(2)
                .map(|i| hex.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
                .collect();
            bytes
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| format!("unexpected output line {hex:?}"))
        })
        .collect()
}
