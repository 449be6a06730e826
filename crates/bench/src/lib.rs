//! Emporium's load generator (`emporium-bench`, `make bench`): the stack and
//! a bare tonic echo server started as processes on one CPU, load from the
//! other, every figure reported against the echo server of the same run.
//!
//! Reading order: [`procs`] (processes, `/proc`) → [`world`] (the stack and
//! its seed data) → [`scenarios`] (what a call is) → [`load`] (closed and
//! open loops) → [`report`] (medians, table, SVG).

pub mod echo;
pub mod load;
pub mod procs;
pub mod report;
pub mod scenarios;
pub mod world;
