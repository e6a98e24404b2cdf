//! Helpers shared by the integration tests: a small runtime per test, data patterns, and
//! (in `target`) the real daemon driven from outside.
#![allow(dead_code)]

pub mod target;

use quorum_bdev::runtime::{Runtime, RuntimeOptions};

/// A runtime of `n` reactors in interrupt mode, unpinned, so tests share the machine.
pub fn runtime(n: usize) -> Runtime {
    Runtime::start(RuntimeOptions {
        cores: (0..n).map(|i| i % 2).collect(),
        interrupt_mode: true,
        pin_threads: false,
    })
    .expect("runtime starts")
}

/// Deterministic, position-dependent bytes, so a misplaced block never matches.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2654435761)
                .rotate_left(seed as u32 % 31) as u8
                ^ seed
        })
        .collect()
}

/// Unregisters a bdev and waits.
pub fn delete(rt: &Runtime, name: &str) -> Result<(), quorum_bdev::bdev::BdevError> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    quorum_bdev::bdev::BdevRegistry::of(rt).unregister(rt, name, None, move |r| {
        let _ = tx.send(r);
    });
    rx.recv().unwrap()
}
