//! The data side of the benchmark suite (`bench/run` is the driver): reads what each tool
//! printed, keeps every run in `bench/results/<date>.json`, and turns that file into
//! bench/RESULTS.md with ratio tables and SVG charts. Also measures the machine's per-block
//! limits (memcmp, SHA-256). A crate of its own so its plotting dependency never reaches the
//! product.

pub mod charts;
pub mod compare;
pub mod limits;
pub mod machine;
pub mod markdown;
pub mod model;
pub mod parse;
pub mod profile;
pub mod stats;
