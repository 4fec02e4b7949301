//! Writes a fake cgroup v1 or v2 forest under a directory, for trying sonde without
//! containers: `cargo run --example fake_sysfs -- DIR [v1|v2] [COUNT]`, then
//! `cargo run -- --path.sysfs=DIR`.

// The fake forest the tests use, included by path: it is no part of the library.
#[path = "../tests/common/cgroup_fixture.rs"]
mod cgroup_fixture;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "fake-sysfs".into());
    let version = args.next().unwrap_or_else(|| "v1".into());
    let count: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(3);
    for seed in 0..count {
        let cgroup = cgroup_fixture::FakeCgroup::seeded(format!("/docker/{seed:064x}"), seed);
        match version.as_str() {
            "v2" => cgroup_fixture::write_v2(dir.as_ref(), &cgroup)?,
            _ => cgroup_fixture::write_v1(dir.as_ref(), &cgroup)?,
        }
    }
    Ok(())
}
