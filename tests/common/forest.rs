//! Fake cgroup forests for the container collector run in process.

use super::cgroup_fixture::{FakeCgroup, write_v1, write_v2};

/// A fake host of `count` Docker containers (`/docker/<seed as 64 hex>`, seeded values) in
/// the given cgroup version, and the configuration that points sonde at it.
pub fn fake_forest(dir: &std::path::Path, version: &str, count: u64, flags: &[&str]) -> sonde::config::Config {
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
