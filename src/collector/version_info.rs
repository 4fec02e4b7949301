//! cAdvisor's `cadvisor_version_info`, with sonde in cAdvisor's place: the constant 1
//! labelled with the kernel's release (`uname -r`), the OS the exporter runs on
//! (`PRETTY_NAME` of its own `/etc/os-release`, else `/usr/lib/os-release`; `Linux` without
//! one, as cAdvisor's `ContainerOsVersion`), an empty `dockerVersion` (cAdvisor no longer
//! fills it), and sonde's version and git revision.

use crate::build_info;
use crate::exposition::family::FamilyBuilder;

/// The family's labels, read once: none of them changes while the process runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    kernel: String,
    os: String,
}

impl VersionInfo {
    pub fn read(procfs: &std::path::Path) -> Self {
        let kernel = std::fs::read_to_string(procfs.join("sys/kernel/osrelease"))
            .map(|t| t.trim().to_owned())
            .unwrap_or_else(|_| "Unknown".to_owned());
        let os = ["/etc/os-release", "/usr/lib/os-release"]
            .iter()
            .find_map(|p| std::fs::read_to_string(p).ok())
            .map_or_else(|| "Unknown".to_owned(), |text| pretty_name(&text));
        Self { kernel, os }
    }

    pub fn family(&self) -> Option<prometheus::proto::MetricFamily> {
        FamilyBuilder::gauge(
            "cadvisor_version_info",
            "A metric with a constant '1' value labeled by kernel version, OS version, docker version, cadvisor version & cadvisor revision.",
        )
        .with_sample(
            &[
                ("cadvisorRevision", build_info::REVISION),
                ("cadvisorVersion", build_info::VERSION),
                ("dockerVersion", ""),
                ("kernelVersion", &self.kernel),
                ("osVersion", &self.os),
            ],
            1.0,
        )
        .build()
    }
}

/// `PRETTY_NAME`'s value without its quotes; `Linux` without the key (cAdvisor's answers).
fn pretty_name(os_release: &str) -> String {
    os_release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map_or_else(|| "Linux".to_owned(), |v| v.trim_matches('"').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_and_kernel_as_cadvisor_names_them() {
        assert_eq!(
            pretty_name("NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\n"),
            "Debian GNU/Linux 13 (trixie)"
        );
        assert_eq!(pretty_name("ID=alpine\n"), "Linux");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("sys/kernel")).expect("mkdir");
        std::fs::write(dir.path().join("sys/kernel/osrelease"), "6.18.44-test\n").expect("write");
        assert_eq!(VersionInfo::read(dir.path()).kernel, "6.18.44-test");
        assert_eq!(VersionInfo::read(&dir.path().join("absent")).kernel, "Unknown");
    }
}
