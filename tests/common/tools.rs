//! The external checkers of an exposition (promtool, Python's `prometheus_client`) and the
//! tools the tests need installed.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

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
    // cAdvisor's own names, kept so that dashboards and queries work: the lints allowed.
    const CADVISOR_NAMES: [&str; 2] = [
        "container_fs_inodes_total non-counter metrics should not have \"_total\" suffix",
        "cadvisor_version_info label names should be written in 'snake_case' not 'camelCase'",
    ];
    let complaints: String = complaints
        .lines()
        .filter(|l| !l.trim().is_empty() && !CADVISOR_NAMES.contains(&l.trim()))
        .map(|l| format!("{l}\n"))
        .collect();
    (out.status.success() || complaints.is_empty(), complaints)
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
