//! Describes the machine and the tool versions a run was measured with, as the results file
//! records them: a figure means little without the CPU, the kernel and the QEMU it came from.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::model::Machine;

/// First line of a command's standard output, if it ran and succeeded.
fn first_line(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(|l| l.trim().to_string())
}

/// Value of the `field:` line of `lscpu`'s text.
fn lscpu_field(lscpu: &str, field: &str) -> Option<String> {
    lscpu.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == field).then(|| v.trim().to_string())
    })
}

/// `MemTotal` of /proc/meminfo in GiB.
fn memory_gib(meminfo: &str) -> Option<f64> {
    let kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib / (1024.0 * 1024.0))
}

/// Gathers the description; `tools` are (name, program) pairs whose `--version` is recorded
/// (a missing tool is recorded as such, not an error: the driver has checked what it needs).
pub fn describe(tools: &[(&str, &str)], repo: &Path) -> Machine {
    let lscpu = Command::new("lscpu")
        .env("LC_ALL", "C")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let versions: BTreeMap<String, String> = tools
        .iter()
        .map(|(name, program)| {
            let v = first_line(program, &["--version"]).unwrap_or_else(|| "not found".into());
            (name.to_string(), v)
        })
        .collect();
    let repo = repo.to_string_lossy();
    let rev = first_line("git", &["-C", &repo, "rev-parse", "--short", "HEAD"])
        .unwrap_or_else(|| "unknown".into());
    let dirty = Command::new("git")
        .args([
            "-C",
            &repo,
            "diff",
            "--quiet",
            "HEAD",
            "--",
            ".",
            ":!bench/results",
        ])
        .status()
        .map(|s| !s.success())
        .unwrap_or(false);
    Machine {
        cpu: lscpu_field(&lscpu, "Model name").unwrap_or_else(|| "unknown".into()),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        memory_gib: memory_gib(&meminfo).unwrap_or(0.0),
        kernel,
        hypervisor: lscpu_field(&lscpu, "Hypervisor vendor"),
        versions,
        git_rev: if dirty { format!("{rev}-dirty") } else { rev },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lscpu_and_meminfo_fields() {
        let lscpu = "Architecture:  x86_64\nModel name:                AMD EPYC\n\
                     Hypervisor vendor:   KVM\n";
        assert_eq!(
            lscpu_field(lscpu, "Model name").as_deref(),
            Some("AMD EPYC")
        );
        assert_eq!(
            lscpu_field(lscpu, "Hypervisor vendor").as_deref(),
            Some("KVM")
        );
        assert_eq!(lscpu_field(lscpu, "Stepping"), None);
        let gib = memory_gib("MemTotal:       24576000 kB\nMemFree: 1 kB\n").unwrap();
        assert!((gib - 23.4375).abs() < 1e-9, "{gib}");
    }

    #[test]
    fn describes_this_machine_and_marks_missing_tools() {
        let m = describe(
            &[("rustc", "rustc"), ("none", "/nonexistent/tool")],
            Path::new(env!("CARGO_MANIFEST_DIR")),
        );
        assert!(m.cpus >= 1);
        assert!(m.memory_gib > 0.0);
        assert!(
            m.versions["rustc"].starts_with("rustc "),
            "{:?}",
            m.versions
        );
        assert_eq!(m.versions["none"], "not found");
    }
}
