//! Writes bench/RESULTS.md from a results file: machine and method, the quorum issue's goals,
//! IOPS tables with their noise, the ratio tables, the machine limits, the charts, the
//! profile, and the hand-written analysis.

use std::fmt::Write;

use crate::compare::{self, Ratio, Shown, GOAL_POINT, LIMITS, NBD, NBD_SHM, VS_QEMU, VS_SINGLE};
use crate::model::{Impl, Results, Stat, Suite};

/// A number of operations per second, short: "12.6 M", "270 k", "950".
pub fn rate(x: f64) -> String {
    if x >= 1e7 {
        format!("{:.1} M", x / 1e6)
    } else if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else if x >= 1e5 {
        format!("{:.0} k", x / 1e3)
    } else if x >= 1e3 {
        format!("{:.1} k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

/// Median with the run range: "1.07 M (1.01–1.10 M)".
pub fn rate_stat(s: &Stat) -> String {
    if s.min == s.max {
        return rate(s.median);
    }
    format!("{} ({}–{})", rate(s.median), rate(s.min), rate(s.max))
}

/// A ratio with its range, as a percentage or a multiple.
pub fn ratio_stat(s: &Stat, shown: Shown) -> String {
    let one = |x: f64| match shown {
        Shown::Percent => format!("{:.1} %", x * 100.0),
        Shown::Times => format!("{x:.2}x"),
    };
    if s.min == s.max {
        return one(s.median);
    }
    format!("{} ({}–{})", one(s.median), one(s.min), one(s.max))
}

fn latency(us: f64) -> String {
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.1} µs")
    }
}

fn size(bs: u64) -> String {
    format!("{} KiB", bs / 1024)
}

fn imp_name(imp: Impl) -> &'static str {
    match imp {
        Impl::Ours => "ours",
        Impl::Qemu => "QEMU",
        Impl::Machine => "machine",
    }
}

/// Distinct values of one key field among a suite's figures, in the suite's order.
struct Axes {
    sizes: Vec<u64>,
    patterns: Vec<&'static str>,
    depths: Vec<u32>,
    targets: Vec<(Impl, String)>,
}

fn axes(r: &Results, suite: Suite) -> Axes {
    let figs: Vec<_> = r.figures.iter().filter(|f| f.key.suite == suite).collect();
    let mut sizes: Vec<u64> = figs.iter().map(|f| f.key.bs).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let patterns = compare::PATTERNS
        .into_iter()
        .filter(|p| figs.iter().any(|f| f.key.rw == *p))
        .collect();
    let depths = compare::QUEUE_DEPTHS
        .into_iter()
        .filter(|q| figs.iter().any(|f| f.key.qd == *q))
        .collect();
    let mut targets: Vec<(Impl, String)> = Vec::new();
    for f in &figs {
        let t = (f.key.imp, f.key.target.clone());
        if !targets.contains(&t) {
            targets.push(t);
        }
    }
    targets.sort_by_key(|(imp, t)| compare::rank(*imp, t));
    Axes {
        sizes,
        patterns,
        depths,
        targets,
    }
}

fn table(out: &mut String, header: &[String], rows: &[Vec<String>]) {
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(header.len()));
    for row in rows {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    out.push('\n');
}

fn iops_tables(out: &mut String, r: &Results, suite: Suite) {
    let a = axes(r, suite);
    for &bs in &a.sizes {
        for &rw in &a.patterns {
            let _ = writeln!(
                out,
                "**{} {rw}**, IOPS, median (min–max) of the runs\n",
                size(bs)
            );
            let mut header = vec!["target".to_string()];
            header.extend(a.depths.iter().map(|q| format!("QD {q}")));
            let rows: Vec<Vec<String>> = a
                .targets
                .iter()
                .map(|(imp, t)| {
                    let mut row = vec![format!("{} {t}", imp_name(*imp))];
                    row.extend(a.depths.iter().map(|&qd| {
                        compare::figure(r, suite, (*imp, t), rw, bs, qd)
                            .map_or("–".into(), |f| rate_stat(&f.iops))
                    }));
                    row
                })
                .collect();
            table(out, &header, &rows);
        }
    }
    // Latency where it is the figure of merit: one I/O in flight.
    let Some(&qd) = a.depths.first() else {
        return;
    };
    let _ = writeln!(out, "Mean latency at QD {qd} (median of the runs):\n");
    let mut header = vec!["target".to_string()];
    let mut columns = Vec::new();
    for &bs in &a.sizes {
        for &rw in &a.patterns {
            header.push(format!("{} {rw}", size(bs)));
            columns.push((bs, rw));
        }
    }
    let mut derived = false;
    let rows: Vec<Vec<String>> = a
        .targets
        .iter()
        .map(|(imp, t)| {
            let mut row = vec![format!("{} {t}", imp_name(*imp))];
            row.extend(columns.iter().map(|&(bs, rw)| {
                let f = compare::figure(r, suite, (*imp, t), rw, bs, qd);
                match f.and_then(|f| Some((f.lat_us?, f.lat_derived))) {
                    Some((l, d)) => {
                        derived |= d;
                        format!("{}{}", latency(l.median), if d { " *" } else { "" })
                    }
                    None => "–".into(),
                }
            }));
            row
        })
        .collect();
    table(out, &header, &rows);
    if derived {
        out.push_str(
            "\\* qemu-img bench reports no latency: depth / IOPS (Little's law), which at \
             QD 1 is the mean time per request.\n\n",
        );
    }
}

fn ratio_table(out: &mut String, r: &Results, ratios: &[Ratio]) {
    let Some(first) = ratios.first() else {
        return;
    };
    let a = axes(r, first.suite);
    let mut header = vec!["size, pattern, QD".to_string()];
    header.extend(ratios.iter().map(|x| x.label.to_string()));
    let mut rows = Vec::new();
    for &bs in &a.sizes {
        for &rw in &a.patterns {
            for &qd in &a.depths {
                let mut row = vec![format!("{} {rw} QD {qd}", size(bs))];
                row.extend(ratios.iter().map(|x| {
                    x.at(r, rw, bs, qd)
                        .map_or("–".into(), |s| ratio_stat(&s, x.shown))
                }));
                rows.push(row);
            }
        }
    }
    table(out, &header, &rows);
}

fn goals(out: &mut String, r: &Results) {
    let (bs, qd) = GOAL_POINT;
    let mut rows = Vec::new();
    for g in compare::goals() {
        let want = match g.ratio.shown {
            Shown::Percent => format!("≥ {:.0} %", g.at_least * 100.0),
            Shown::Times => format!("≥ {:.0}x", g.at_least),
        };
        let (got, status) = match g.ratio.at(r, g.rw, bs, qd) {
            Some(s) => (
                ratio_stat(&s, g.ratio.shown),
                if s.median >= g.at_least {
                    "met"
                } else {
                    "**not met**"
                },
            ),
            None => ("not measured".into(), "–"),
        };
        let what = match g.ratio.shown {
            Shown::Percent => format!("quorum of 3 / single child, {}", g.ratio.label),
            Shown::Times => format!("ours / QEMU quorum, {}", g.ratio.label),
        };
        rows.push(vec![what, g.rw.to_string(), want, got, status.to_string()]);
    }
    let header = ["comparison", "pattern", "goal", "measured", "status"].map(String::from);
    table(out, &header, &rows);
}

fn limits(out: &mut String, r: &Results) {
    let ops = [
        ("memcpy-read", "memcpy, DRAM → cached buffer"),
        ("memcpy-write", "memcpy, cached buffer → DRAM"),
        ("zero-fill", "zero-fill of a buffer of a 128-buffer ring"),
        ("memcmp-dram", "memcmp of two blocks from DRAM"),
        ("memcmp-hot", "memcmp of two cached blocks"),
        ("sha256-dram", "SHA-256 of a block from DRAM"),
        ("sha256-hot", "SHA-256 of a cached block"),
    ];
    let a = axes(r, Suite::Limits);
    if a.sizes.is_empty() {
        out.push_str("Not measured in this run.\n\n");
        return;
    }
    let mut header = vec!["operation (one core)".to_string()];
    header.extend(a.sizes.iter().map(|&bs| format!("{} blocks/s", size(bs))));
    header.extend(a.sizes.iter().map(|&bs| format!("{} GB/s", size(bs))));
    // Operations a run did not measure at all (older runs had no zero-fill) are left out.
    let rows: Vec<Vec<String>> = ops
        .iter()
        .filter_map(|(op, what)| {
            let mut row = vec![what.to_string()];
            let fig = |bs| {
                compare::figure(r, Suite::Limits, (Impl::Machine, op), "", bs, 0).map(|f| f.iops)
            };
            if a.sizes.iter().all(|&bs| fig(bs).is_none()) {
                return None;
            }
            row.extend(
                a.sizes
                    .iter()
                    .map(|&bs| fig(bs).map_or("–".into(), |s| rate_stat(&s))),
            );
            row.extend(a.sizes.iter().map(|&bs| {
                fig(bs).map_or("–".into(), |s| {
                    format!("{:.1}", s.median * bs as f64 / 1e9)
                })
            }));
            Some(row)
        })
        .collect();
    table(out, &header, &rows);

    let qd = a_depth_max(r);
    let _ = writeln!(
        out,
        "Measured IOPS (median) at QD {qd} against the rate the unavoidable per-I/O work \
         allows on this core (from the best run of each operation above: a limit bounds what \
         the core can do, and other work on the machine only lowers it):\n"
    );
    let mut rows = Vec::new();
    for l in LIMITS {
        for &bs in &a.sizes {
            let Some(limit) = l.rate(r, bs) else { continue };
            let got = compare::figure(r, Suite::Inprocess, (l.imp, l.target), l.rw, bs, qd);
            let (got, share) = match got {
                Some(f) => (
                    rate(f.iops.median),
                    format!("{:.0} %", f.iops.median / limit * 100.0),
                ),
                None => ("–".into(), "–".into()),
            };
            rows.push(vec![
                format!("{} {} {}", imp_name(l.imp), l.target, l.rw),
                size(bs),
                l.work.to_string(),
                rate(limit),
                got,
                share,
            ]);
        }
    }
    let header = [
        "target",
        "size",
        "work per I/O",
        "limit",
        "measured",
        "of limit",
    ]
    .map(String::from);
    table(out, &header, &rows);
}

fn a_depth_max(r: &Results) -> u32 {
    axes(r, Suite::Inprocess)
        .depths
        .last()
        .copied()
        .unwrap_or(128)
}

fn profile(out: &mut String, r: &Results) {
    let Some(p) = &r.profile else {
        out.push_str("Not profiled in this run (perf missing or failed).\n\n");
        return;
    };
    let _ = writeln!(
        out,
        "`{}` under `perf record -e cpu-clock -g`: {} samples{}. Self time (callees \
         excluded), by part of the stack:\n",
        p.command,
        p.samples,
        p.iops.map_or(String::new(), |i| format!(
            ", {} IOPS while sampled",
            rate(i)
        ))
    );
    let rows: Vec<Vec<String>> = p
        .buckets
        .iter()
        .map(|(b, pct)| vec![b.clone(), format!("{pct:.1} %")])
        .collect();
    table(out, &["part".into(), "self time".into()], &rows);
    out.push_str("Top symbols:\n\n");
    let rows: Vec<Vec<String>> = p
        .symbols
        .iter()
        .take(15)
        .map(|s| {
            vec![
                format!("`{}`", s.symbol.replace('|', "\\|")),
                format!("{:.1} %", s.percent),
                s.bucket.clone(),
            ]
        })
        .collect();
    table(out, &["symbol".into(), "self".into(), "part".into()], &rows);
}

/// The whole RESULTS.md. `results_name` is the results file as linked from RESULTS.md;
/// `charts` the chart files (relative to RESULTS.md) with their titles; `sections` results
/// of other scripts (each a markdown section with its own heading) and `analysis` the
/// hand-written analysis, included verbatim.
pub fn render(
    r: &Results,
    results_name: &str,
    charts: &[(String, String)],
    sections: &[String],
    analysis: Option<&str>,
) -> String {
    let mut out = String::new();
    let m = &r.machine;
    let _ = writeln!(out, "# Benchmark results\n");
    let _ = writeln!(
        out,
        "Generated by `bench/run` ({} mode) from [`{results_name}`]({results_name}), started \
         {}. Do not edit by hand: `bench/run` regenerates this file (see bench/README.md).\n",
        r.method.mode, r.date
    );
    let _ = writeln!(out, "## Machine and method\n");
    let mut rows = vec![
        vec!["CPU".into(), m.cpu.clone()],
        vec!["CPUs".into(), m.cpus.to_string()],
        vec!["memory".into(), format!("{:.1} GiB", m.memory_gib)],
        vec!["kernel".into(), m.kernel.clone()],
        vec![
            "hypervisor".into(),
            m.hypervisor.clone().unwrap_or_else(|| "none".into()),
        ],
        vec!["revision".into(), m.git_rev.clone()],
    ];
    rows.extend(m.versions.iter().map(|(k, v)| vec![k.clone(), v.clone()]));
    rows.push(vec![
        "runs per point".into(),
        format!(
            "{} × {} s; every figure is the median, with (min–max)",
            r.method.runs_per_point, r.method.seconds_per_run
        ),
    ]);
    rows.push(vec![
        "RAM-backed child size".into(),
        format!("{} MiB", r.method.child_bytes >> 20),
    ]);
    rows.extend(
        r.method
            .settings
            .iter()
            .map(|(k, v)| vec![k.clone(), v.clone()]),
    );
    table(&mut out, &["".into(), "".into()], &rows);

    let (bs, qd) = GOAL_POINT;
    let _ = writeln!(
        out,
        "## The quorum issue's goals ({}, QD {qd}, one core, in process)\n",
        size(bs)
    );
    goals(&mut out, r);

    let _ = writeln!(out, "## In process: quorum-perf and qemu-img bench\n");
    iops_tables(&mut out, r, Suite::Inprocess);
    let _ = writeln!(out, "### Quorum of 3 / one child of the same kind (ours)\n");
    ratio_table(&mut out, r, VS_SINGLE);
    let _ = writeln!(out, "### Our quorum / QEMU's quorum\n");
    ratio_table(&mut out, r, VS_QEMU);

    let _ = writeln!(out, "## End to end over NBD (fio's nbd engine)\n");
    match &r.nbd_skipped {
        Some(why) => {
            let _ = writeln!(out, "Not measured in this run: {why}\n");
        }
        None => {
            out.push_str(
                "Two sets of targets: over null children (ours null, QEMU null-co), and over \
                 the same three raw files in /dev/shm (ours aio, QEMU raw). QEMU's export \
                 answers reads of null-co with hole chunks (NBD_REPLY_TYPE_OFFSET_HOLE, no \
                 payload; through its quorum too), so on QEMU's side the null read rows move \
                 no data while ours carry every byte: those rows do not compare data \
                 transfer. The /dev/shm file rows move data on both sides.\n\n",
            );
            iops_tables(&mut out, r, Suite::Nbd);
            let _ = writeln!(out, "### Over null children\n");
            ratio_table(&mut out, r, NBD);
            let _ = writeln!(out, "### Over the same /dev/shm files\n");
            ratio_table(&mut out, r, NBD_SHM);
        }
    }

    let _ = writeln!(out, "## The machine's limits (one core, same run)\n");
    limits(&mut out, r);

    if !charts.is_empty() {
        let _ = writeln!(out, "## Charts\n");
        out.push_str(
            "IOPS (left) and mean latency (right) against queue depth, both axes logarithmic; \
             ours solid, QEMU dashed; vertical bars span the runs' min–max.\n\n",
        );
        for (file, title) in charts {
            let _ = writeln!(out, "![{title}]({file})\n");
        }
    }

    let _ = writeln!(out, "## Profile\n");
    profile(&mut out, r);

    for text in sections {
        out.push_str(text.trim());
        out.push_str("\n\n");
    }
    if let Some(text) = analysis {
        let _ = writeln!(out, "## Analysis\n");
        out.push_str(text.trim());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::tests::{results, s};
    use crate::model::Suite::{Inprocess, Limits, Nbd};

    #[test]
    fn number_formats() {
        assert_eq!(rate(12_618_450.0), "12.6 M");
        assert_eq!(rate(1_071_497.0), "1.07 M");
        assert_eq!(rate(270_000.0), "270 k");
        assert_eq!(rate(24_344.0), "24.3 k");
        assert_eq!(rate(950.4), "950");
        let st = Stat {
            median: 0.085,
            min: 0.08,
            max: 0.09,
        };
        assert_eq!(ratio_stat(&st, Shown::Percent), "8.5 % (8.0 %–9.0 %)");
        let one = Stat {
            median: 4.2,
            min: 4.2,
            max: 4.2,
        };
        assert_eq!(ratio_stat(&one, Shown::Times), "4.20x");
    }

    #[test]
    fn report_shows_goals_tables_limits_and_skipped_nbd() {
        let mut samples = Vec::new();
        for (imp, t, v) in [
            (Impl::Ours, "quorum3-null", 5.0e6),
            (Impl::Ours, "null", 1.0e7),
            (Impl::Ours, "quorum3-malloc", 2.0e5),
            (Impl::Ours, "malloc", 1.0e6),
            (Impl::Ours, "quorum3-aio-shm", 3.0e5),
            (Impl::Ours, "aio-shm", 6.0e5),
            (Impl::Qemu, "quorum3-null-co", 2.5e5),
            (Impl::Qemu, "quorum3-raw-shm", 1.2e5),
        ] {
            samples.push(s(Inprocess, imp, t, "randread", 4096, 128, v));
            samples.push(s(Inprocess, imp, t, "randread", 4096, 1, v / 10.0));
        }
        samples.push(s(Limits, Impl::Machine, "memcpy-read", "", 4096, 0, 2.0e6));
        samples.push(s(Limits, Impl::Machine, "zero-fill", "", 4096, 0, 2.0e7));
        let mut r = results(&samples);
        r.nbd_skipped = Some("quorum-tgt has no nbd_server_start".into());
        let md = render(
            &r,
            "results/x.json",
            &[("charts/a.svg".into(), "A".into())],
            &["## Elsewhere\n\nMeasured apart.\n".into()],
            Some("Why."),
        );
        assert!(
            md.contains("| quorum of 3 / single child, null | randread | ≥ 35 % | 50.0 % | met |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| quorum of 3 / single child, malloc | randread | ≥ 30 % | 20.0 % | **not met** |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| ours / QEMU quorum, null / null-co | randread | ≥ 10x | 20.00x | met |"),
            "{md}"
        );
        assert!(
            md.contains("| ours quorum3-null | 500 k | 5.00 M |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| ours / QEMU quorum, aio / raw, same /dev/shm files | randread | ≥ 10x | \
                 2.50x | **not met** |"
            ),
            "{md}"
        );
        assert!(
            md.contains(
                "| size, pattern, QD | null | malloc | uring, /dev/shm files | aio, /dev/shm files |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| 4 KiB randread QD 128 | 50.0 % | 20.0 % | – | 50.0 % |"),
            "{md}"
        );
        assert!(
            md.contains("| 4 KiB randread QD 128 | 20.00x | – | 2.50x | 1.67x |"),
            "{md}"
        );
        assert!(md.contains("Not measured in this run: quorum-tgt has no nbd_server_start"));
        assert!(
            md.contains(
                "| ours malloc randread | 4 KiB | 1 memcpy from DRAM | 2.00 M | 1.00 M | 50 % |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| ours null randread | 4 KiB | 1 zero-fill | 20.0 M | 10.0 M | 50 % |"),
            "{md}"
        );
        assert!(
            md.contains("| zero-fill of a buffer of a 128-buffer ring | 20.0 M"),
            "{md}"
        );
        // Operations the run did not measure get no row.
        assert!(!md.contains("memcmp of two cached blocks"), "{md}");
        assert!(md.contains("![A](charts/a.svg)"));
        assert!(md.ends_with("## Elsewhere\n\nMeasured apart.\n\n## Analysis\n\nWhy.\n"));
    }

    #[test]
    fn nbd_section_has_null_and_file_tables_and_the_hole_note() {
        let mut samples = Vec::new();
        for (imp, t, v) in [
            (Impl::Ours, "quorum3-null", 2.0e5),
            (Impl::Ours, "null", 2.5e5),
            (Impl::Ours, "quorum3-aio-shm", 1.1e5),
            (Impl::Ours, "aio-shm", 1.6e5),
            (Impl::Qemu, "quorum3-null-co", 1.0e5),
            (Impl::Qemu, "null-co", 2.0e5),
            (Impl::Qemu, "quorum3-raw-shm", 5.5e4),
            (Impl::Qemu, "raw-shm", 1.0e5),
        ] {
            samples.push(s(Nbd, imp, t, "randread", 4096, 128, v));
            samples.push(s(Nbd, imp, t, "randread", 4096, 1, v / 4.0));
        }
        let md = render(&results(&samples), "results/x.json", &[], &[], None);
        let nbd = &md[md.find("## End to end over NBD").unwrap()..];
        let nbd = &nbd[..nbd.find("## The machine's limits").unwrap()];
        assert!(
            nbd.contains("QEMU's export answers reads of null-co with hole chunks"),
            "{nbd}"
        );
        // IOPS rows in TARGETS' order: ours quorum then single, ours before QEMU.
        let rows: Vec<&str> = nbd
            .lines()
            .filter(|l| l.starts_with("| ours ") || l.starts_with("| QEMU "))
            .take(8)
            .collect();
        assert_eq!(
            rows,
            [
                "| ours quorum3-null | 50.0 k | 200 k |",
                "| ours null | 62.5 k | 250 k |",
                "| ours quorum3-aio-shm | 27.5 k | 110 k |",
                "| ours aio-shm | 40.0 k | 160 k |",
                "| QEMU quorum3-null-co | 25.0 k | 100 k |",
                "| QEMU null-co | 50.0 k | 200 k |",
                "| QEMU quorum3-raw-shm | 13.8 k | 55.0 k |",
                "| QEMU raw-shm | 25.0 k | 100 k |",
            ]
        );
        let null = &nbd[nbd.find("### Over null children").unwrap()..];
        assert!(
            null.contains(
                "| size, pattern, QD | quorum3: ours / QEMU | single: ours / QEMU | \
                 ours: quorum3 / single | QEMU: quorum3 / single |"
            ),
            "{null}"
        );
        assert!(
            null.contains("| 4 KiB randread QD 128 | 2.00x | 1.25x | 80.0 % | 50.0 % |"),
            "{null}"
        );
        let shm = &nbd[nbd.find("### Over the same /dev/shm files").unwrap()..];
        assert!(
            shm.contains(
                "| size, pattern, QD | quorum3: ours aio / QEMU raw | ours quorum3 / QEMU \
                 single raw | single: ours aio / QEMU raw | ours: quorum3 / single | QEMU: \
                 quorum3 / single |"
            ),
            "{shm}"
        );
        assert!(
            shm.contains("| 4 KiB randread QD 1 | 2.00x | 1.10x | 1.60x | 68.8 % | 55.0 % |"),
            "{shm}"
        );
        assert!(
            shm.contains("| 4 KiB randread QD 128 | 2.00x | 1.10x | 1.60x | 68.8 % | 55.0 % |"),
            "{shm}"
        );
    }
}
