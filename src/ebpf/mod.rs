//! The kernel side's user half: loading the probes, the per-CPU batch drain, the records.

pub mod batch;
pub mod conn;
pub mod free_ring;
pub mod loader;
pub mod mapped;
pub mod table;
