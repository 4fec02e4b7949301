//! Containers: finding their cgroups, naming them, and deciding which to report.

pub mod discovery;
pub mod filter;
pub mod inventory;
pub mod metadata;
