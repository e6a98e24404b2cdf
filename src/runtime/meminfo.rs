//! How much memory the machine can still give this process, read from the kernel: what a
//! RAM disk must check before it takes memory, because an anonymous mapping succeeds whatever
//! its size under the default overcommit policy and the process is OOM-killed later, when
//! the pages are touched.

use std::fmt;

/// What the machine can still give, and by which rule that was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBudget {
    /// Bytes.
    pub bytes: u64,
    /// Where the figure comes from.
    pub rule: BudgetRule,
}

/// The kernel's overcommit policy decides which figure bounds an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetRule {
    /// `vm.overcommit_memory` 0 or 1: mappings are not refused, so the bound is the memory
    /// that can really back them (`MemAvailable`).
    Available,
    /// `vm.overcommit_memory` 2: the kernel refuses commits beyond `CommitLimit`, so the
    /// bound is `CommitLimit - Committed_AS`.
    CommitLimit,
}

impl fmt::Display for MemoryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let gib = self.bytes as f64 / (1u64 << 30) as f64;
        match self.rule {
            BudgetRule::Available => write!(f, "{gib:.1} GiB (MemAvailable)"),
            BudgetRule::CommitLimit => write!(
                f,
                "{gib:.1} GiB (CommitLimit - Committed_AS, strict overcommit)"
            ),
        }
    }
}

/// The budget now, from `/proc/sys/vm/overcommit_memory` and `/proc/meminfo`.
pub fn budget() -> std::io::Result<MemoryBudget> {
    let policy = std::fs::read_to_string("/proc/sys/vm/overcommit_memory")?;
    let meminfo = std::fs::read_to_string("/proc/meminfo")?;
    budget_from(policy.trim(), &meminfo).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "/proc/meminfo lacks MemAvailable or CommitLimit",
        )
    })
}

/// The budget given the overcommit policy and the text of `/proc/meminfo`.
fn budget_from(policy: &str, meminfo: &str) -> Option<MemoryBudget> {
    let field = |name: &str| -> Option<u64> {
        let line = meminfo
            .lines()
            .find(|l| l.split(':').next() == Some(name))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    };
    if policy == "2" {
        let headroom = field("CommitLimit")?.saturating_sub(field("Committed_AS")?);
        return Some(MemoryBudget {
            bytes: headroom,
            rule: BudgetRule::CommitLimit,
        });
    }
    Some(MemoryBudget {
        bytes: field("MemAvailable")?,
        rule: BudgetRule::Available,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str = "MemTotal:       24683584 kB\nMemFree:         1000 kB\n\
                           MemAvailable:   23652220 kB\nCommitLimit:    12341792 kB\n\
                           Committed_AS:     342032 kB\n";

    #[test]
    fn the_overcommit_policy_picks_the_figure() {
        for policy in ["0", "1"] {
            assert_eq!(
                budget_from(policy, MEMINFO),
                Some(MemoryBudget {
                    bytes: 23652220 * 1024,
                    rule: BudgetRule::Available
                })
            );
        }
        assert_eq!(
            budget_from("2", MEMINFO),
            Some(MemoryBudget {
                bytes: (12341792 - 342032) * 1024,
                rule: BudgetRule::CommitLimit
            })
        );
        assert_eq!(budget_from("0", "MemTotal: 5 kB\n"), None);
    }

    #[test]
    fn the_live_budget_is_readable() {
        assert!(budget().unwrap().bytes > 0);
    }
}
