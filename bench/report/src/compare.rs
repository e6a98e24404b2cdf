//! What the suite compares: the target names `bench/run` measures under, the ratios RESULTS.md
//! tabulates (ours / single child, ours / QEMU, ours / machine limit) and the quorum issue's
//! goals. Kept in one place so that the driver's names and the report's tables agree.

use crate::model::{Figure, Impl, Key, Results, Stat, Suite};

/// Queue depths and I/O sizes of the full suite (a quick run measures a subset).
pub const QUEUE_DEPTHS: [u32; 4] = [1, 8, 32, 128];
/// I/O patterns of the suite.
pub const PATTERNS: [&str; 2] = ["randread", "randwrite"];

/// Every target the driver measures, in the order tables and legends list them: ours then
/// QEMU's, each quorum of 3 before its single child. Colours of the charts follow it.
pub const TARGETS: &[(Impl, &str)] = &[
    (Impl::Ours, "quorum3-null"),
    (Impl::Ours, "null"),
    (Impl::Ours, "quorum3-malloc"),
    (Impl::Ours, "malloc"),
    (Impl::Ours, "quorum3-uring-shm"),
    (Impl::Ours, "uring-shm"),
    (Impl::Ours, "quorum3-aio-shm"),
    (Impl::Ours, "aio-shm"),
    (Impl::Qemu, "quorum3-null-co"),
    (Impl::Qemu, "null-co"),
    (Impl::Qemu, "quorum3-raw-shm"),
    (Impl::Qemu, "raw-shm"),
];

/// Position of a target in [`TARGETS`]; unknown targets sort after, by name.
pub fn rank(imp: Impl, target: &str) -> (usize, String) {
    let i = TARGETS
        .iter()
        .position(|&(m, t)| m == imp && t == target)
        .unwrap_or(TARGETS.len());
    (i, target.to_string())
}

/// How a ratio reads best.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    /// As a percentage (a share of a faster reference).
    Percent,
    /// As a multiple ("4.2x").
    Times,
}

/// One ratio: `num` over `den`, both of the same suite, size, pattern and depth.
#[derive(Debug, Clone, Copy)]
pub struct Ratio {
    /// Column title.
    pub label: &'static str,
    /// Suite of both sides.
    pub suite: Suite,
    /// Numerator: whose and which target.
    pub num: (Impl, &'static str),
    /// Denominator.
    pub den: (Impl, &'static str),
    /// How to print it.
    pub shown: Shown,
}

const fn ratio(
    label: &'static str,
    suite: Suite,
    num: (Impl, &'static str),
    den: (Impl, &'static str),
    shown: Shown,
) -> Ratio {
    Ratio {
        label,
        suite,
        num,
        den,
        shown,
    }
}

use Impl::{Ours, Qemu};
use Suite::{Inprocess, Nbd};

/// Quorum of 3 against one child of the same kind (what voting costs).
pub const VS_SINGLE: &[Ratio] = &[
    ratio(
        "null",
        Inprocess,
        (Ours, "quorum3-null"),
        (Ours, "null"),
        Shown::Percent,
    ),
    ratio(
        "malloc",
        Inprocess,
        (Ours, "quorum3-malloc"),
        (Ours, "malloc"),
        Shown::Percent,
    ),
    ratio(
        "uring, /dev/shm files",
        Inprocess,
        (Ours, "quorum3-uring-shm"),
        (Ours, "uring-shm"),
        Shown::Percent,
    ),
    ratio(
        "aio, /dev/shm files",
        Inprocess,
        (Ours, "quorum3-aio-shm"),
        (Ours, "aio-shm"),
        Shown::Percent,
    ),
];

/// Our quorum against QEMU's, in process.
pub const VS_QEMU: &[Ratio] = &[
    ratio(
        "null / null-co",
        Inprocess,
        (Ours, "quorum3-null"),
        (Qemu, "quorum3-null-co"),
        Shown::Times,
    ),
    ratio(
        "uring / raw, same /dev/shm files",
        Inprocess,
        (Ours, "quorum3-uring-shm"),
        (Qemu, "quorum3-raw-shm"),
        Shown::Times,
    ),
    ratio(
        "aio / raw, same /dev/shm files",
        Inprocess,
        (Ours, "quorum3-aio-shm"),
        (Qemu, "quorum3-raw-shm"),
        Shown::Times,
    ),
    ratio(
        "malloc / raw /dev/shm files (both RAM)",
        Inprocess,
        (Ours, "quorum3-malloc"),
        (Qemu, "quorum3-raw-shm"),
        Shown::Times,
    ),
];

/// End to end over NBD, over null children. QEMU's export answers reads of null-co with hole
/// chunks (no payload), so its read rows move no data while ours carry every byte.
pub const NBD: &[Ratio] = &[
    ratio(
        "quorum3: ours / QEMU",
        Nbd,
        (Ours, "quorum3-null"),
        (Qemu, "quorum3-null-co"),
        Shown::Times,
    ),
    ratio(
        "single: ours / QEMU",
        Nbd,
        (Ours, "null"),
        (Qemu, "null-co"),
        Shown::Times,
    ),
    ratio(
        "ours: quorum3 / single",
        Nbd,
        (Ours, "quorum3-null"),
        (Ours, "null"),
        Shown::Percent,
    ),
    ratio(
        "QEMU: quorum3 / single",
        Nbd,
        (Qemu, "quorum3-null-co"),
        (Qemu, "null-co"),
        Shown::Percent,
    ),
];

/// End to end over NBD, over the same three raw files in /dev/shm: data moves on both sides.
/// The second column is the NBD issue's target: our quorum's export at least as fast as
/// QEMU's export of one file.
pub const NBD_SHM: &[Ratio] = &[
    ratio(
        "quorum3: ours aio / QEMU raw",
        Nbd,
        (Ours, "quorum3-aio-shm"),
        (Qemu, "quorum3-raw-shm"),
        Shown::Times,
    ),
    ratio(
        "ours quorum3 / QEMU single raw",
        Nbd,
        (Ours, "quorum3-aio-shm"),
        (Qemu, "raw-shm"),
        Shown::Times,
    ),
    ratio(
        "single: ours aio / QEMU raw",
        Nbd,
        (Ours, "aio-shm"),
        (Qemu, "raw-shm"),
        Shown::Times,
    ),
    ratio(
        "ours: quorum3 / single",
        Nbd,
        (Ours, "quorum3-aio-shm"),
        (Ours, "aio-shm"),
        Shown::Percent,
    ),
    ratio(
        "QEMU: quorum3 / single",
        Nbd,
        (Qemu, "quorum3-raw-shm"),
        (Qemu, "raw-shm"),
        Shown::Percent,
    ),
];

/// A set of charts: for each I/O size and pattern, one SVG of these targets of one suite,
/// named `<file>-<size>k-<pattern>.svg`.
#[derive(Debug, Clone, Copy)]
pub struct Charts {
    /// First part of the file names.
    pub file: &'static str,
    /// Where the targets ran, as the chart titles say it.
    pub title: &'static str,
    /// Suite of the figures.
    pub suite: Suite,
    /// The targets drawn; `None`: every target of the suite.
    pub targets: Option<&'static [(Impl, &'static str)]>,
}

impl Charts {
    /// Whether a target is drawn on these charts.
    pub fn shows(&self, imp: Impl, target: &str) -> bool {
        self.targets
            .is_none_or(|ts| ts.iter().any(|&(m, t)| m == imp && t == target))
    }
}

/// The charts RESULTS.md shows. Over NBD the null and the /dev/shm file targets get charts of
/// their own, each with both implementations, so neither set hides the other.
pub const CHARTS: &[Charts] = &[
    Charts {
        file: "inprocess",
        title: "in process",
        suite: Inprocess,
        targets: None,
    },
    Charts {
        file: "nbd",
        title: "over NBD, null children",
        suite: Nbd,
        targets: Some(&[
            (Ours, "quorum3-null"),
            (Ours, "null"),
            (Qemu, "quorum3-null-co"),
            (Qemu, "null-co"),
        ]),
    },
    Charts {
        file: "nbd-shm",
        title: "over NBD, /dev/shm files",
        suite: Nbd,
        targets: Some(&[
            (Ours, "quorum3-aio-shm"),
            (Ours, "aio-shm"),
            (Qemu, "quorum3-raw-shm"),
            (Qemu, "raw-shm"),
        ]),
    },
];

/// A point's figure.
pub fn figure<'a>(
    r: &'a Results,
    suite: Suite,
    (imp, target): (Impl, &str),
    rw: &str,
    bs: u64,
    qd: u32,
) -> Option<&'a Figure> {
    r.get(&Key {
        suite,
        imp,
        target: target.to_string(),
        rw: rw.to_string(),
        bs,
        qd,
    })
}

/// The ratio of medians, with the widest range the runs allow (lowest numerator over highest
/// denominator, and the reverse).
pub fn ratio_of(num: &Stat, den: &Stat) -> Option<Stat> {
    (den.median > 0.0 && den.min > 0.0 && den.max > 0.0).then(|| Stat {
        median: num.median / den.median,
        min: num.min / den.max,
        max: num.max / den.min,
    })
}

impl Ratio {
    /// The ratio at one point, if both sides were measured.
    pub fn at(&self, r: &Results, rw: &str, bs: u64, qd: u32) -> Option<Stat> {
        let num = figure(r, self.suite, self.num, rw, bs, qd)?;
        let den = figure(r, self.suite, self.den, rw, bs, qd)?;
        ratio_of(&num.iops, &den.iops)
    }
}

/// The machine's rate of a limit operation at a block size, if measured: the best run, since
/// a limit bounds what the core can do and other work on the machine only ever lowers it.
pub fn limit_rate(r: &Results, target: &str, bs: u64) -> Option<f64> {
    r.get(&Key {
        suite: Suite::Limits,
        imp: Impl::Machine,
        target: target.to_string(),
        rw: String::new(),
        bs,
        qd: 0,
    })
    .map(|f| f.iops.max)
}

/// An upper bound on a target's IOPS from the per-block work it cannot avoid.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    /// Whose target.
    pub imp: Impl,
    /// Target (in-process suite).
    pub target: &'static str,
    /// Pattern.
    pub rw: &'static str,
    /// The work, in words.
    pub work: &'static str,
    /// Per-block costs: (count, limit operation), summed as count / rate.
    pub costs: &'static [(f64, &'static str)],
}

impl Limit {
    /// Operations per second the work allows at `bs` (1 / sum of per-operation times).
    pub fn rate(&self, r: &Results, bs: u64) -> Option<f64> {
        let mut seconds = 0.0;
        for &(count, op) in self.costs {
            seconds += count / limit_rate(r, op, bs)?;
        }
        (seconds > 0.0).then(|| 1.0 / seconds)
    }
}

/// The limits RESULTS.md compares with.
pub const LIMITS: &[Limit] = &[
    Limit {
        imp: Ours,
        target: "malloc",
        rw: "randread",
        work: "1 memcpy from DRAM",
        costs: &[(1.0, "memcpy-read")],
    },
    Limit {
        imp: Ours,
        target: "malloc",
        rw: "randwrite",
        work: "1 memcpy to DRAM",
        costs: &[(1.0, "memcpy-write")],
    },
    Limit {
        imp: Ours,
        target: "quorum3-malloc",
        rw: "randread",
        // Child 0 is copied into the caller's buffer; the other two lend their blocks (zcopy)
        // and are each compared, from DRAM, with that cached copy: priced as one memcmp of
        // two DRAM blocks and one of two cached blocks.
        work: "1 memcpy from DRAM + 2 memcmp of a DRAM block against a cached one",
        costs: &[
            (1.0, "memcpy-read"),
            (1.0, "memcmp-dram"),
            (1.0, "memcmp-hot"),
        ],
    },
    Limit {
        imp: Ours,
        target: "quorum3-malloc",
        rw: "randwrite",
        work: "3 memcpy to DRAM",
        costs: &[(3.0, "memcpy-write")],
    },
    Limit {
        imp: Ours,
        target: "null",
        rw: "randread",
        work: "1 zero-fill",
        costs: &[(1.0, "zero-fill")],
    },
    Limit {
        imp: Ours,
        target: "quorum3-null",
        rw: "randread",
        work: "3 zero-fills + 2 memcmp of cached buffers",
        costs: &[(3.0, "zero-fill"), (2.0, "memcmp-hot")],
    },
];

/// The quorum issue's goals, at 4 KiB, queue depth 128, one core.
#[derive(Debug, Clone, Copy)]
pub struct Goal {
    /// The ratio checked.
    pub ratio: Ratio,
    /// Pattern.
    pub rw: &'static str,
    /// Lowest acceptable value of the ratio (0.35 = 35 %, 10.0 = 10x).
    pub at_least: f64,
}

/// Size and depth the goals are stated at.
pub const GOAL_POINT: (u64, u32) = (4096, 128);

/// Every goal, read and write.
pub fn goals() -> Vec<Goal> {
    let mut out = Vec::new();
    for rw in PATTERNS {
        out.push(Goal {
            ratio: VS_SINGLE[0],
            rw,
            at_least: 0.35,
        });
        out.push(Goal {
            ratio: VS_SINGLE[1],
            rw,
            at_least: 0.30,
        });
        for r in VS_QEMU {
            out.push(Goal {
                ratio: *r,
                rw,
                at_least: 10.0,
            });
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::{Machine, Method, Sample};
    use crate::stats::figures;
    use std::collections::BTreeMap;

    pub(crate) fn results(samples: &[Sample]) -> Results {
        Results {
            schema: crate::model::SCHEMA,
            date: "2026-01-01T00:00:00Z".into(),
            method: Method {
                mode: "quick".into(),
                runs_per_point: 1,
                seconds_per_run: 1.0,
                child_bytes: 1 << 29,
                settings: BTreeMap::new(),
            },
            machine: Machine {
                cpu: "cpu".into(),
                cpus: 2,
                memory_gib: 1.0,
                kernel: "k".into(),
                hypervisor: None,
                versions: BTreeMap::new(),
                git_rev: "abc".into(),
            },
            nbd_skipped: None,
            figures: figures(samples),
            profile: None,
        }
    }

    pub(crate) fn s(
        suite: Suite,
        imp: Impl,
        target: &str,
        rw: &str,
        bs: u64,
        qd: u32,
        iops: f64,
    ) -> Sample {
        Sample {
            key: Key {
                suite,
                imp,
                target: target.into(),
                rw: rw.into(),
                bs,
                qd,
            },
            iops,
            lat_us: None,
            lat_derived: false,
        }
    }

    #[test]
    fn ratios_use_medians_and_widest_range() {
        let r = results(&[
            s(
                Inprocess,
                Ours,
                "quorum3-null",
                "randread",
                4096,
                128,
                4.0e6,
            ),
            s(
                Inprocess,
                Ours,
                "quorum3-null",
                "randread",
                4096,
                128,
                5.0e6,
            ),
            s(
                Inprocess,
                Ours,
                "quorum3-null",
                "randread",
                4096,
                128,
                6.0e6,
            ),
            s(Inprocess, Ours, "null", "randread", 4096, 128, 1.0e7),
            s(Inprocess, Ours, "null", "randread", 4096, 128, 1.0e7),
            s(Inprocess, Ours, "null", "randread", 4096, 128, 2.0e7),
        ]);
        let v = VS_SINGLE[0].at(&r, "randread", 4096, 128).unwrap();
        assert!((v.median - 0.5).abs() < 1e-12);
        assert!((v.min - 0.2).abs() < 1e-12);
        assert!((v.max - 0.6).abs() < 1e-12);
        assert!(VS_SINGLE[0].at(&r, "randwrite", 4096, 128).is_none());
        assert!(VS_QEMU[0].at(&r, "randread", 4096, 128).is_none());
    }

    #[test]
    fn ratios_and_charts_name_known_targets_in_order() {
        let known = |(imp, t): (Impl, &str)| TARGETS.contains(&(imp, t));
        for x in [VS_SINGLE, VS_QEMU, NBD, NBD_SHM].concat() {
            assert!(known(x.num) && known(x.den), "{}", x.label);
        }
        for set in CHARTS {
            for &t in set.targets.unwrap_or(&[]) {
                assert!(known(t), "{} {t:?}", set.file);
            }
        }
        // Ours before QEMU's, and each quorum of 3 right before its single child.
        let before = |a: (Impl, &str), b: (Impl, &str)| rank(a.0, a.1) < rank(b.0, b.1);
        assert!(before((Ours, "aio-shm"), (Qemu, "quorum3-null-co")));
        for (imp, q, one) in [
            (Ours, "quorum3-aio-shm", "aio-shm"),
            (Qemu, "quorum3-raw-shm", "raw-shm"),
        ] {
            assert_eq!(rank(imp, q).0 + 1, rank(imp, one).0, "{q}");
        }
        // The NBD charts split the null targets from the /dev/shm file ones.
        let nbd: Vec<_> = CHARTS.iter().filter(|c| c.suite == Nbd).collect();
        assert_eq!(nbd.len(), 2);
        assert!(nbd[0].shows(Qemu, "null-co") && !nbd[0].shows(Ours, "aio-shm"));
        assert!(nbd[1].shows(Qemu, "raw-shm") && !nbd[1].shows(Ours, "null"));
        assert!(CHARTS[0].shows(Ours, "quorum3-aio-shm"));
    }

    #[test]
    fn aio_and_file_backed_nbd_ratios() {
        let io = |suite, imp, t: &str, v| s(suite, imp, t, "randwrite", 4096, 128, v);
        // Same targets in both suites, other figures: each ratio reads its own suite.
        let r = results(&[
            io(Inprocess, Ours, "quorum3-aio-shm", 3.0e5),
            io(Inprocess, Ours, "aio-shm", 6.0e5),
            io(Inprocess, Qemu, "quorum3-raw-shm", 1.0e5),
            io(Nbd, Ours, "quorum3-aio-shm", 1.2e5),
            io(Nbd, Ours, "aio-shm", 1.5e5),
            io(Nbd, Qemu, "quorum3-raw-shm", 6.0e4),
            io(Nbd, Qemu, "raw-shm", 1.0e5),
        ]);
        let at = |list: &[Ratio], label: &str| {
            let x = list.iter().find(|x| x.label == label).expect(label);
            x.at(&r, "randwrite", 4096, 128).expect(label).median
        };
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(at(VS_SINGLE, "aio, /dev/shm files"), 0.5));
        assert!(close(at(VS_QEMU, "aio / raw, same /dev/shm files"), 3.0));
        assert!(close(at(NBD_SHM, "quorum3: ours aio / QEMU raw"), 2.0));
        assert!(close(at(NBD_SHM, "ours quorum3 / QEMU single raw"), 1.2));
        assert!(close(at(NBD_SHM, "single: ours aio / QEMU raw"), 1.5));
        assert!(close(at(NBD_SHM, "ours: quorum3 / single"), 0.8));
        assert!(close(at(NBD_SHM, "QEMU: quorum3 / single"), 0.6));
    }

    #[test]
    fn limit_sums_per_operation_times() {
        let l = |t: &str, v: f64| s(Suite::Limits, Impl::Machine, t, "", 4096, 0, v);
        // A disturbed run (1e6) does not lower the limit: the best run counts.
        let r = results(&[
            l("memcpy-read", 1.0e6),
            l("memcpy-read", 3.0e6),
            l("memcmp-dram", 2.0e6),
            l("memcmp-hot", 2.0e7),
        ]);
        let q = LIMITS
            .iter()
            .find(|l| l.target == "quorum3-malloc" && l.rw == "randread");
        // 1 / 3e6 + 1 / 2e6 + 1 / 2e7 = 0.8833e-6 s per I/O.
        let rate = q.unwrap().rate(&r, 4096).unwrap();
        assert!(
            (rate - 1.0 / (1.0 / 3e6 + 1.0 / 2e6 + 1.0 / 2e7)).abs() < 1e-3,
            "{rate}"
        );
        assert!(
            LIMITS[1].rate(&r, 4096).is_none(),
            "memcpy-write was not measured"
        );
    }
}
