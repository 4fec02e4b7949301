//! Least privilege: the real binary, started as root with every capability, keeps exactly
//! the capabilities its enabled collectors need (README, "Privileges"), on every thread,
//! with `no_new_privs`; and still works after the drop: the probes load, a connection in a
//! network namespace the test made is walked and its gateway looked up there (`setns`),
//! and the container collector reads the real cgroups.
//! Needs root; under CI=true it fails instead of skipping.

mod common;

use common::netns::NetnsPair;
use common::*;

/// Capability numbers (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

fn mask(caps: &[u32]) -> u64 {
    caps.iter().fold(0, |m, c| m | (1u64 << c))
}

/// `CapInh`, `CapPrm`, `CapEff`, `CapBnd`, `CapAmb` and `NoNewPrivs` of one status file.
fn privileges(status: &str) -> [u64; 6] {
    let field = |name: &str, radix: u32| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), radix).ok())
            .unwrap_or_else(|| panic!("{name} in {status}"))
    };
    [
        field("CapInh:", 16),
        field("CapPrm:", 16),
        field("CapEff:", 16),
        field("CapBnd:", 16),
        field("CapAmb:", 16),
        field("NoNewPrivs:", 10),
    ]
}

/// Every thread of the process has `kept` and nothing more.
fn assert_kept(sonde: &Sonde, kept: u64) {
    let pid = sonde.child.id();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks");
    let mut threads = 0;
    for task in tasks.flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue; // a thread that just ended
        };
        assert_eq!(
            privileges(&status),
            [0, kept, kept, kept, 0, 1],
            "thread {:?}: [CapInh, CapPrm, CapEff, CapBnd, CapAmb, NoNewPrivs]",
            task.file_name()
        );
        threads += 1;
    }
    assert!(threads > 1, "the runtime's threads were looked at too");
}

/// Scrapes until the connection collector succeeds: the probes loaded after the drop.
fn probes_loaded(sonde: &Sonde) -> String {
    scrape_until(sonde, "the probes loaded after the drop", |text| {
        success(text, "connection") == Some(1.0)
    })
}

/// One sonde at a time here: loading the probes is the slow part of a start, and several
/// at once on a busy machine can miss more than one scrape deadline.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serialized() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

fn success(text: &str, collector: &str) -> Option<f64> {
    sample_value(text, &format!("sonde_collector_success{{collector=\"{collector}\"}}"))
}

#[test]
fn every_collector_keeps_the_documented_capabilities_and_works() {
    if !root_or_skip("every_collector_keeps_the_documented_capabilities_and_works") {
        return;
    }
    let _one = serialized();
    let pair = NetnsPair::new("privs");
    let sonde = Sonde::start(&["--no-docker", "--connection.ephemeral-port-range=1-1"]);
    // The probes load at the first scrape, after the drop (a busy machine may take longer
    // than one scrape's deadline: the load goes on, and a later scrape sees it).
    probes_loaded(&sonde);
    let (port, read) = pair.transfer(4321);
    assert_eq!(read, 4321);
    let port = port.to_string();
    let filter = [("direction", "inbound"), ("port", port.as_str())];
    let text = scrape_until(&sonde, "the connection in the test's namespace", |text| {
        samples_with(text, "sonde_tcp_bytes_received_total", &filter)
            .iter()
            .any(|s| s.value == 4321.0)
    });
    for collector in ["host", "container", "connection"] {
        assert_eq!(success(&text, collector), Some(1.0), "{collector}");
    }
    // The test's namespace was entered (setns) to open a netlink socket there for the
    // connection's route (a direct route: no gateway label, but asked all the same), besides
    // sonde's own. (The walk-failure count is not asserted: other tests' namespaces may go
    // away in the middle of a walk.)
    assert!(
        sample_value(&text, "sonde_gateway_netns_handles").is_some_and(|n| n >= 2.0),
        "a netlink socket in the test's namespace"
    );
    assert!(!text.contains("reason=\"netns_enter\""), "no namespace refused entry");
    // CAP_SYS_ADMIN stands for CAP_BPF and CAP_PERFMON, which are not kept beside it;
    // CAP_NET_ADMIN is kept for the NAT lookup (conntrack over netlink), on by default.
    assert_kept(&sonde, mask(&[CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_SYS_PTRACE]));
}

/// Started without CAP_SYS_ADMIN (as a runtime that grants only CAP_BPF, CAP_PERFMON and
/// CAP_SYS_PTRACE would): those three are kept, and the probes load after the drop.
#[test]
fn without_cap_sys_admin_the_probes_still_load_with_cap_bpf_and_cap_perfmon() {
    if !root_or_skip("without_cap_sys_admin_the_probes_still_load_with_cap_bpf_and_cap_perfmon") {
        return;
    }
    let _one = serialized();
    let mut cmd = std::process::Command::new(require_tool("setpriv"));
    cmd.args([
        "--bounding-set=-all,+bpf,+perfmon,+sys_ptrace",
        "--inh-caps=-all",
        "--",
        env!("CARGO_BIN_EXE_sonde"),
    ]);
    let sonde = Sonde::start_command(cmd, &["--no-docker", "--no-collector.host"]);
    let text = probes_loaded(&sonde);
    assert_eq!(success(&text, "container"), Some(1.0));
    assert_kept(&sonde, mask(&[CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE]));
}

#[test]
fn the_container_collector_alone_keeps_only_cap_sys_ptrace() {
    if !root_or_skip("the_container_collector_alone_keeps_only_cap_sys_ptrace") {
        return;
    }
    let _one = serialized();
    let sonde = Sonde::start(&["--no-docker", "--no-collector.connection"]);
    let text = scrape(&sonde);
    assert_eq!(success(&text, "container"), Some(1.0));
    // sonde's own network stats come through /proc/<pid>/ns/net and net/dev.
    assert!(
        text.contains("container_network_receive_bytes_total{"),
        "network stats read"
    );
    assert_kept(&sonde, mask(&[CAP_SYS_PTRACE]));
}

#[test]
fn the_host_collector_alone_keeps_none() {
    if !root_or_skip("the_host_collector_alone_keeps_none") {
        return;
    }
    let _one = serialized();
    let sonde = Sonde::start(&["--no-docker", "--no-collector.connection", "--no-collector.container"]);
    let text = scrape(&sonde);
    assert_eq!(success(&text, "host"), Some(1.0));
    assert_kept(&sonde, 0);
}

/// With the NAT lookup off, the connection collector does not keep `CAP_NET_ADMIN`.
#[test]
fn without_the_nat_lookup_cap_net_admin_is_dropped() {
    if !root_or_skip("without_the_nat_lookup_cap_net_admin_is_dropped") {
        return;
    }
    let _one = serialized();
    let sonde = Sonde::start(&["--no-docker", "--no-conntrack"]);
    probes_loaded(&sonde);
    assert_kept(&sonde, mask(&[CAP_SYS_ADMIN, CAP_SYS_PTRACE]));
}
