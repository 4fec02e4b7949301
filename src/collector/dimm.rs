//! Memory modules by type, from the kernel's EDAC per-DIMM files, as cAdvisor's
//! `GetMachineMemoryByType` reads them for `machine_dimm_count` and
//! `machine_dimm_capacity_bytes`: `<sysfs>/devices/system/edac/mc/mc<N>/dimm<M>/` holds
//! `dimm_mem_type` (e.g. `Unbuffered-DDR4`) and `size` (MiB). Hosts without an EDAC driver
//! (most virtual machines, many arm64 boards) have no such directory: no series, as cAdvisor.

use std::collections::BTreeMap;
use std::path::Path;

/// Modules of one memory type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dimms {
    pub count: u64,
    pub capacity_bytes: u64,
}

/// The modules by type; empty without EDAC. A module whose files cannot be read or parsed
/// makes the whole answer an error, as in cAdvisor (a partial count would be wrong).
pub fn by_type(sysfs: &Path) -> Result<BTreeMap<String, Dimms>, String> {
    let edac = sysfs.join("devices/system/edac/mc");
    let mut memory = BTreeMap::new();
    let Ok(controllers) = std::fs::read_dir(&edac) else {
        return Ok(memory);
    };
    for controller in controllers.flatten() {
        if !numbered(&controller.file_name(), "mc") {
            continue;
        }
        let dimms =
            std::fs::read_dir(controller.path()).map_err(|e| format!("{}: {e}", controller.path().display()))?;
        for dimm in dimms.flatten() {
            if !numbered(&dimm.file_name(), "dimm") {
                continue;
            }
            let read = |file: &str| {
                let path = dimm.path().join(file);
                std::fs::read_to_string(&path)
                    .map(|t| t.trim().to_owned())
                    .map_err(|e| format!("{}: {e}", path.display()))
            };
            let kind = read("dimm_mem_type")?;
            let size = read("size")?;
            let mib: u64 = size
                .parse()
                .map_err(|_| format!("{}: {size:?} is not a size in MiB", dimm.path().join("size").display()))?;
            let entry: &mut Dimms = memory.entry(kind).or_default();
            entry.count += 1;
            entry.capacity_bytes += mib << 20;
        }
    }
    Ok(memory)
}

/// `mc0`, `dimm12`: the prefix and then digits.
fn numbered(name: &std::ffi::OsStr, prefix: &str) -> bool {
    name.to_str()
        .and_then(|n| n.strip_prefix(prefix))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dimm(sysfs: &Path, at: &str, kind: &str, size: &str) {
        let dir = sysfs.join("devices/system/edac/mc").join(at);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("dimm_mem_type"), format!("{kind}\n")).expect("write");
        std::fs::write(dir.join("size"), format!("{size}\n")).expect("write");
    }

    /// cAdvisor's own test layout: modules of two controllers counted by type; directories
    /// that are not `mc<N>/dimm<M>` (a fake controller, a fake module) are not.
    #[test]
    fn modules_by_type_as_cadvisor_counts_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sysfs = dir.path();
        assert_eq!(by_type(sysfs), Ok(BTreeMap::new()), "no EDAC: nothing");
        dimm(sysfs, "mc0/dimm0", "Unbuffered-DDR4", "16384");
        dimm(sysfs, "mc0/dimm1", "Unbuffered-DDR4", "16384");
        dimm(sysfs, "mc1/dimm0", "Non-volatile-RAM", "4096");
        dimm(sysfs, "mc0/dimm_is_fake", "Unbuffered-DDR4", "1");
        dimm(sysfs, "mc_fake/dimm0", "Unbuffered-DDR4", "1");
        let memory = by_type(sysfs).expect("read");
        assert_eq!(
            memory,
            BTreeMap::from([
                (
                    "Non-volatile-RAM".to_owned(),
                    Dimms {
                        count: 1,
                        capacity_bytes: 4096 << 20
                    }
                ),
                (
                    "Unbuffered-DDR4".to_owned(),
                    Dimms {
                        count: 2,
                        capacity_bytes: 32768 << 20
                    }
                ),
            ])
        );
        dimm(sysfs, "mc1/dimm1", "Unbuffered-DDR4", "lots");
        assert!(by_type(sysfs).is_err());
    }
}
