//! Where the exporter reads the host's pseudo-filesystems, so it can run in a container
//! that mounts the host's at another place (`--path.*`).

use std::path::PathBuf;

/// The host's procfs, sysfs and root, as this process sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub procfs: PathBuf,
    pub sysfs: PathBuf,
    pub rootfs: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Self {
            procfs: "/proc".into(),
            sysfs: "/sys".into(),
            rootfs: "/".into(),
        }
    }
}

/// The `--path.*` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct PathArgs {
    /// procfs mountpoint
    #[arg(long = "path.procfs", value_name = "DIR", default_value = "/proc")]
    procfs: String,
    /// sysfs mountpoint
    #[arg(long = "path.sysfs", value_name = "DIR", default_value = "/sys")]
    sysfs: String,
    /// Root of the host filesystem
    #[arg(long = "path.rootfs", value_name = "DIR", default_value = "/")]
    rootfs: String,
}

impl PathArgs {
    pub fn resolve(&self) -> Paths {
        Paths {
            procfs: self.procfs.clone().into(),
            sysfs: self.sysfs.clone().into(),
            rootfs: self.rootfs.clone().into(),
        }
    }
}
