//! A directory's disk usage as cAdvisor's `GetDirUsage` measures it (`du` without crossing
//! devices: every entry's `st_blocks · 512`, hard links once, and the count of entries as
//! its inodes), but resumable: [`Walk::step`] stops after a budget of entries and the next
//! call goes on where it stopped, so a background pass can be bounded in work.

use std::collections::HashSet;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What a finished walk found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub inodes: u64,
}

/// A walk under way.
#[derive(Debug)]
pub struct Walk {
    device: u64,
    /// Directories still to read.
    pending: Vec<PathBuf>,
    /// Inodes with more than one link already counted.
    linked: HashSet<u64>,
    usage: Usage,
}

impl Walk {
    /// Starts at `root`, counting it.
    pub fn start(root: &Path) -> std::io::Result<Walk> {
        let meta = std::fs::symlink_metadata(root)?;
        let mut walk = Walk {
            device: meta.dev(),
            pending: Vec::new(),
            linked: HashSet::new(),
            usage: Usage::default(),
        };
        walk.count(&meta);
        if meta.is_dir() {
            walk.pending.push(root.to_owned());
        }
        Ok(walk)
    }

    /// `major:minor` of the device the walk stays on.
    pub fn device(&self) -> (u64, u64) {
        (libc::major(self.device) as u64, libc::minor(self.device) as u64)
    }

    fn count(&mut self, meta: &std::fs::Metadata) {
        if meta.nlink() > 1 && !self.linked.insert(meta.ino()) {
            return;
        }
        self.usage.bytes = self.usage.bytes.saturating_add(meta.blocks().saturating_mul(512));
        self.usage.inodes += 1;
    }

    /// Reads directories until `budget` entries are counted (a directory is read whole, so
    /// it may take more) or the walk ends: `Some` with the usage when it has ended. Entries
    /// that vanish meanwhile are skipped; any other error ends the walk with it.
    pub fn step(&mut self, budget: &mut u64) -> std::io::Result<Option<Usage>> {
        while *budget > 0 {
            let Some(dir) = self.pending.pop() else {
                return Ok(Some(self.usage));
            };
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for entry in entries {
                let entry = match entry {
                    Ok(entry) => entry,
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                // DirEntry::metadata does not follow symbolic links (lstat), as Go's Walk.
                let meta = match entry.metadata() {
                    Ok(meta) => meta,
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                *budget = budget.saturating_sub(1);
                if meta.dev() != self.device {
                    continue;
                }
                self.count(&meta);
                if meta.is_dir() {
                    self.pending.push(entry.path());
                }
            }
        }
        Ok(self.pending.is_empty().then_some(self.usage))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks(path: &Path) -> u64 {
        std::fs::symlink_metadata(path).expect("lstat").blocks() * 512
    }

    #[test]
    fn usage_in_bounded_steps_equals_one_walk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let mut expected = Usage {
            bytes: blocks(root),
            inodes: 1,
        };
        for d in 0..5 {
            let sub = root.join(format!("d{d}"));
            std::fs::create_dir(&sub).expect("mkdir");
            for f in 0..7 {
                let file = sub.join(format!("f{f}"));
                std::fs::write(&file, vec![1u8; 5000 * (f + 1)]).expect("write");
                expected.bytes += blocks(&file);
                expected.inodes += 1;
            }
            expected.bytes += blocks(&sub);
            expected.inodes += 1;
        }
        // A hard link counts once; a symbolic link is itself, not its target.
        std::fs::hard_link(root.join("d0/f6"), root.join("hard")).expect("link");
        std::os::unix::fs::symlink(root.join("d1"), root.join("soft")).expect("symlink");
        expected.bytes += blocks(&root.join("soft"));
        expected.inodes += 1;

        let mut whole = Walk::start(root).expect("start");
        assert_eq!(whole.step(&mut u64::MAX.clone()).expect("walk"), Some(expected));

        let mut walk = Walk::start(root).expect("start");
        let mut steps = 0;
        let usage = loop {
            steps += 1;
            let mut budget = 3;
            if let Some(usage) = walk.step(&mut budget).expect("step") {
                break usage;
            }
        };
        assert_eq!(usage, expected);
        assert!(steps > 5, "a budget of 3 entries took {steps} steps");
        assert!(Walk::start(&root.join("absent")).is_err());
    }
}
