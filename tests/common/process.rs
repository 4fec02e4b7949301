//! The real `sonde` binary as a child process on an ephemeral port, and its log.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

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

    /// Waits (30 s at most) for a log line that contains every one of `parts`; the lines
    /// before it are consumed.
    pub fn wait_for_log(&self, parts: &[&str]) -> String {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if let Ok(line) = self.log.recv_timeout(Duration::from_millis(200))
                && parts.iter().all(|p| line.contains(p))
            {
                return line;
            }
        }
        panic!("no log line with {parts:?}");
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

/// A process stopped with SIGSTOP, sent SIGCONT when dropped: also when the test fails, so
/// it is never left stopped.
pub struct Stopped(libc::pid_t);

impl Stopped {
    pub fn stop(pid: u32) -> Stopped {
        let pid = libc::pid_t::try_from(pid).expect("a pid");
        // SAFETY: a signal to the test's own child.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0, "SIGSTOP");
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: a signal to the test's own child.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}
