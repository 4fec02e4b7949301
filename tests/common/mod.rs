//! Helpers shared by the integration tests (and, by path, the benchmarks), one concern a
//! file: the real binary as a child process, scraping it, reading what it answers, the
//! external checkers, this machine, Docker, and the stand-ins and fake hosts it runs against.
//! None of it uses the sonde crate's API: the tests of the binary alone (`output_unchanged`)
//! build whatever the library looks like.
#![allow(dead_code, unused_imports)] // each test crate (and benchmark) uses its own subset

pub mod cgroup_fixture;
pub mod docker;
pub mod dockerd;
pub mod fake_docker;
pub mod host;
pub mod kit;
pub mod kubelet;
pub mod netns;
pub mod process;
pub mod prometheus_server;
pub mod samples;
pub mod scrape;
pub mod tools;
pub mod web;

pub use docker::*;
pub use host::*;
pub use process::*;
pub use samples::*;
pub use scrape::*;
pub use tools::*;
