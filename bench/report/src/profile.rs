//! Reads `perf report --stdio --no-children -g none -F overhead,sample,sym` and sums self
//! time into the parts of the stack a reader reasons about (the vote's memcmp, the null
//! child's memset, the bdev layer, the load generator...), which is what the analysis in
//! RESULTS.md needs: where the remaining gap to the limit goes.

use crate::model::{Profile, ProfileSymbol};

/// Buckets in match order: the first with a matching pattern wins. A pattern with `::` is a
/// path prefix of the symbol's subject (see [`subject`]), any other a part of its name (libc's
/// `__memcmp_evex_movbe`). Kernel symbols (`[k]`) go to "kernel" and anything unmatched to
/// "other (libc, allocator...)".
pub const BUCKETS: &[(&str, &[&str])] = &[
    ("vote: memcmp of child buffers", &["memcmp", "bcmp"]),
    ("null child: memset of read buffers", &["memset"]),
    ("memcpy", &["memcpy", "memmove"]),
    (
        "quorum module (fan-out, vote, completion)",
        &["modules::quorum", "quorum_core::"],
    ),
    ("child bdev modules (null, malloc, uring)", &["modules::"]),
    (
        "bdev layer (submit, accounting, completion queue)",
        &["bdev::"],
    ),
    ("buffer pool (DmaBuf)", &["runtime::buf"]),
    (
        "runtime (reactor loop, pollers, messages)",
        &["runtime::", "crossbeam"],
    ),
    (
        "load generator (quorum-perf jobs, latency histogram)",
        &["perf::", "hdrhistogram::", "rand::"],
    ),
];

const KERNEL: &str = "kernel";
const OTHER: &str = "other (libc, allocator...)";

/// What a symbol is code of: for a trait method `<T as Trait>::m` the implementing type `T`
/// (the job's `io_done` is load-generator code even though the trait is the bdev layer's),
/// without this crate's own prefix.
pub fn subject(symbol: &str) -> &str {
    let s = match symbol.strip_prefix('<') {
        Some(rest) => rest.split(" as ").next().unwrap_or(rest),
        None => symbol,
    };
    s.strip_prefix("quorum_bdev::").unwrap_or(s)
}

/// The bucket of one symbol.
pub fn bucket(symbol: &str, kernel: bool) -> &'static str {
    if kernel {
        return KERNEL;
    }
    let subject = subject(symbol);
    let matches = |p: &&str| {
        if p.contains("::") {
            subject.starts_with(p)
        } else {
            subject.contains(p)
        }
    };
    BUCKETS
        .iter()
        .find(|(_, patterns)| patterns.iter().any(matches))
        .map_or(OTHER, |(name, _)| name)
}

/// Parses perf's table; `None` if it holds no sample line.
pub fn parse(report: &str, command: String, iops: Option<f64>) -> Option<Profile> {
    let mut samples = 0u64;
    let mut symbols = Vec::new();
    for line in report.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(percent), Some(count)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Some(percent) = percent
            .strip_suffix('%')
            .and_then(|p| p.parse::<f64>().ok())
        else {
            continue;
        };
        let Ok(count) = count.parse::<u64>() else {
            continue;
        };
        let rest = line
            .split_once(']')
            .map(|(mark, sym)| (mark.ends_with("[k"), sym.trim()));
        let Some((kernel, symbol)) = rest else {
            continue;
        };
        samples += count;
        symbols.push(ProfileSymbol {
            symbol: symbol.to_string(),
            percent,
            bucket: bucket(symbol, kernel).to_string(),
        });
    }
    if symbols.is_empty() {
        return None;
    }
    let mut buckets: Vec<(String, f64)> = Vec::new();
    for s in &symbols {
        match buckets.iter_mut().find(|(b, _)| *b == s.bucket) {
            Some((_, p)) => *p += s.percent,
            None => buckets.push((s.bucket.clone(), s.percent)),
        }
    }
    buckets.sort_by(|a, b| b.1.total_cmp(&a.1));
    symbols.sort_by(|a, b| b.percent.total_cmp(&a.percent));
    Some(Profile {
        command,
        samples,
        iops,
        symbols,
        buckets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Head of a real `perf report` of quorum-perf on a quorum of 3 nulls, randread QD 128.
    const REPORT: &str = "\
# Samples: 5K of event 'cpu-clock'
# Overhead       Samples  Symbol
# ........  ............  ..........
#
    25.17%          1405  [.] __memcmp_evex_movbe
    17.70%           988  [.] __memset_avx512_unaligned_erms
     9.03%           504  [.] <quorum_bdev::modules::quorum::channel::QuorumChannel as quorum_bdev::bdev::io::IoDone>::io_done
     7.42%           414  [.] quorum_bdev::bdev::channel::IoChannel::submit
     2.40%           134  [.] <quorum_bdev::perf::job::Job as quorum_bdev::bdev::io::IoDone>::io_done
     1.15%            64  [.] hdrhistogram::Histogram<T>::saturating_record
     1.09%            61  [.] <quorum_bdev::runtime::buf::DmaBuf as core::ops::drop::Drop>::drop
     0.45%            25  [.] quorum_bdev::runtime::reactor::run
     0.43%            24  [.] <quorum_bdev::modules::null::NullChannel as quorum_bdev::bdev::BdevChannel>::submit
     0.18%            10  [k] irqentry_exit_to_user_mode
     0.02%             1  [.] _int_free
";

    #[test]
    fn symbols_land_in_their_buckets() {
        let p = parse(REPORT, "quorum-perf ...".into(), Some(1e6)).unwrap();
        assert_eq!(
            p.samples,
            1405 + 988 + 504 + 414 + 134 + 64 + 61 + 25 + 24 + 10 + 1
        );
        assert_eq!(p.symbols.len(), 11);
        let of = |needle: &str| {
            p.symbols
                .iter()
                .find(|s| s.symbol.contains(needle))
                .unwrap()
                .bucket
                .clone()
        };
        assert_eq!(of("memcmp"), "vote: memcmp of child buffers");
        assert_eq!(of("memset"), "null child: memset of read buffers");
        assert_eq!(
            of("QuorumChannel"),
            "quorum module (fan-out, vote, completion)"
        );
        // The host-neutral quorum (its own crate) counts as quorum code too.
        assert_eq!(
            bucket("quorum_core::io::QuorumIo::vote", false),
            "quorum module (fan-out, vote, completion)"
        );
        assert_eq!(
            of("NullChannel"),
            "child bdev modules (null, malloc, uring)"
        );
        assert_eq!(
            of("IoChannel::submit"),
            "bdev layer (submit, accounting, completion queue)"
        );
        assert_eq!(
            of("Job as"),
            "load generator (quorum-perf jobs, latency histogram)"
        );
        assert_eq!(
            of("hdrhistogram"),
            "load generator (quorum-perf jobs, latency histogram)"
        );
        assert_eq!(of("DmaBuf"), "buffer pool (DmaBuf)");
        assert_eq!(
            of("reactor::run"),
            "runtime (reactor loop, pollers, messages)"
        );
        assert_eq!(of("irqentry"), "kernel");
        assert_eq!(of("_int_free"), "other (libc, allocator...)");
        assert_eq!(p.buckets[0].0, "vote: memcmp of child buffers");
        let load: f64 = p
            .buckets
            .iter()
            .find(|b| b.0.starts_with("load generator"))
            .unwrap()
            .1;
        assert!((load - 3.55).abs() < 1e-9, "{load}");
    }

    #[test]
    fn empty_report_is_none() {
        assert!(parse("# nothing\n", String::new(), None).is_none());
    }
}
