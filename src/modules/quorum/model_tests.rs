//! The quorum bdev against a transcription of QEMU's algorithm (`reference`): random child
//! contents, failing children and thresholds, through the real module (malloc children
//! behind error bdevs on a reactor), must give the same data, the same errno and the same
//! events as QEMU would.

use std::collections::BTreeSet;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;

use super::reference;
use super::{create, find, QuorumOptions, ReadPattern};
use crate::bdev::blocking::{read, write};
use crate::bdev::{Bdev, IoType};
use crate::modules::error::{self, ErrorType, Injection, Target};
use crate::modules::malloc;
use crate::runtime::{Runtime, RuntimeOptions};

const BS: usize = 512;

fn content(variant: u8) -> Vec<u8> {
    (0..BS)
        .map(|i| (i as u8).wrapping_mul(31) ^ variant.wrapping_mul(97))
        .collect()
}

struct Case {
    quorum: Arc<Bdev>,
    name: String,
    bases: Vec<Arc<Bdev>>,
    children: Vec<String>,
}

fn build(rt: &Runtime, id: usize, n: usize, threshold: usize) -> Case {
    let mut bases = Vec::new();
    let mut children = Vec::new();
    for i in 0..n {
        let base = malloc::create(rt, Some(format!("m{id}_{i}")), 8, BS as u32, None).unwrap();
        let ee = error::create(rt, base.name(), None).unwrap();
        children.push(ee.name().to_string());
        bases.push(base);
    }
    let name = format!("q{id}");
    let opts = QuorumOptions {
        vote_threshold: threshold,
        read_pattern: ReadPattern::Quorum,
        blkverify: false,
        rewrite_corrupted: false,
    };
    let quorum = create(rt, &name, &children, opts, None).unwrap();
    Case {
        quorum,
        name,
        bases,
        children,
    }
}

fn fail_next(rt: &Runtime, child: &str, io: IoType) {
    let inj = Injection {
        target: Target::Only(io),
        error_type: ErrorType::Failure,
        num: 1,
        queue_depth: 0,
        corrupt_offset: 0,
        corrupt_value: 0,
    };
    error::inject(rt, child, &inj).unwrap();
}

/// (child index, errno or 0) of each REPORT_BAD, and whether QUORUM_FAILURE was emitted.
fn observed_events(rt: &Runtime, case: &Case) -> (Vec<(usize, i32)>, bool) {
    let (_, shared) = find(rt, &case.name).unwrap();
    let events = shared.events().since(0, usize::MAX);
    let mut bad = Vec::new();
    let mut failure = false;
    for e in events {
        if e.event == "QUORUM_FAILURE" {
            failure = true;
            continue;
        }
        let node = e.data["node-name"].as_str().unwrap();
        let index = case.children.iter().position(|c| c == node).unwrap();
        let errno = match &e.data.get("error") {
            Some(Value::String(text)) => {
                assert_eq!(text, "Input/output error");
                libc::EIO
            }
            _ => 0,
        };
        bad.push((index, errno));
    }
    bad.sort_unstable();
    (bad, failure)
}

#[test]
fn module_matches_qemu_reference_model() {
    let rt = Runtime::start(RuntimeOptions::default()).unwrap();
    let mut runner = TestRunner::new(Config {
        cases: 150,
        ..Config::default()
    });
    let strategy = (1usize..=5).prop_flat_map(|n| {
        (
            Just(n),
            1..=n,
            proptest::collection::vec(0u8..3, n),
            proptest::collection::vec(proptest::bool::weighted(0.3), n),
            any::<bool>(),
        )
    });
    let next_id = std::sync::atomic::AtomicUsize::new(0);
    runner
        .run(&strategy, |(n, threshold, variants, failing, is_read)| {
            let id = next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let case = build(&rt, id, n, threshold);
            for (i, base) in case.bases.iter().enumerate() {
                write(&rt, base, 0, &content(variants[i])).unwrap();
            }
            let io = if is_read { IoType::Read } else { IoType::Write };
            for (i, child) in case.children.iter().enumerate() {
                if failing[i] {
                    fail_next(&rt, child, io);
                }
            }
            let (events, failure) = if is_read {
                let got = read(&rt, &case.quorum, 0, 1);
                let inputs: Vec<Result<Vec<u8>, i32>> = (0..n)
                    .map(|i| {
                        if failing[i] {
                            Err(-libc::EIO)
                        } else {
                            Ok(content(variants[i]))
                        }
                    })
                    .collect();
                let want = reference::read(&inputs, threshold);
                match want.copied_from {
                    Some(winner) => prop_assert_eq!(got, Ok(content(variants[winner]))),
                    None => prop_assert_eq!(got, Err(-want.ret)),
                }
                let mut want_bad = want.report_bad.clone();
                want_bad.sort_unstable();
                let (bad, failure) = observed_events(&rt, &case);
                prop_assert_eq!(&bad, &want_bad);
                (bad, failure == (want.ret != 0))
            } else {
                let payload = content(7);
                let got = write(&rt, &case.quorum, 0, &payload);
                let rets: Vec<i32> = failing
                    .iter()
                    .map(|&f| if f { -libc::EIO } else { 0 })
                    .collect();
                let want = reference::write(&rets, threshold);
                prop_assert_eq!(got.err().map(|e| -e).unwrap_or(0), want.ret);
                for (i, base) in case.bases.iter().enumerate() {
                    let expect = if failing[i] {
                        content(variants[i])
                    } else {
                        payload.clone()
                    };
                    prop_assert_eq!(read(&rt, base, 0, 1).unwrap(), expect, "child {}", i);
                }
                let mut want_bad = want.report_bad.clone();
                want_bad.sort_unstable();
                let (bad, failure) = observed_events(&rt, &case);
                prop_assert_eq!(&bad, &want_bad);
                (bad, failure == (want.ret != 0))
            };
            prop_assert!(
                failure,
                "QUORUM_FAILURE iff the request failed; events {:?}",
                events
            );
            let unique: BTreeSet<_> = events.iter().map(|e| e.0).collect();
            prop_assert_eq!(unique.len(), events.len(), "one report per child");
            Ok(())
        })
        .unwrap();
    rt.stop();
}
