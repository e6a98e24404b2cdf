//! `quorum-perf`, the bdevperf-like load generator; everything lives in `quorum_bdev::perf`.

fn main() -> std::process::ExitCode {
    quorum_bdev::perf::main()
}
