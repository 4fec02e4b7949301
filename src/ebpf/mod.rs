//! The kernel side's user half: loading the probes, the per-CPU batch drain, the live
//! connections (the TCP iterator and the UDP table), the records.

pub mod batch;
pub mod conn;
pub mod live;
pub mod loader;
