//! SVG charts of RESULTS.md: for each set of targets in [`compare::CHARTS`], I/O size and
//! pattern, IOPS and mean latency against queue depth, ours and QEMU on the same axes, each
//! point's min–max drawn as a bar so noise is visible. Made with plotters' SVG backend only
//! (no fonts, no bitmap).

use std::path::Path;

use plotters::prelude::*;

use crate::compare::{self, Charts};
use crate::markdown::rate;
use crate::model::{Figure, Impl, Results, Stat};

/// Colour of a target, by its place in [`compare::TARGETS`]: a kind's quorum dark, its
/// single child light, so a chart reads at a glance.
fn colour(imp: Impl, target: &str) -> RGBColor {
    const PALETTE: [RGBColor; 13] = [
        RGBColor(31, 119, 180),
        RGBColor(140, 180, 225),
        RGBColor(44, 160, 44),
        RGBColor(140, 210, 125),
        RGBColor(148, 103, 189),
        RGBColor(197, 176, 213),
        RGBColor(23, 150, 160),
        RGBColor(130, 205, 210),
        RGBColor(214, 39, 40),
        RGBColor(250, 140, 140),
        RGBColor(255, 127, 14),
        RGBColor(255, 190, 120),
        RGBColor(120, 120, 120),
    ];
    PALETTE[compare::rank(imp, target).0.min(PALETTE.len() - 1)]
}

/// One line of a chart: a target's points by queue depth.
struct Line<'a> {
    name: String,
    qemu: bool,
    colour: RGBColor,
    points: Vec<&'a Figure>,
}

fn lines<'a>(r: &'a Results, set: &Charts, bs: u64, rw: &str) -> Vec<Line<'a>> {
    let mut out: Vec<Line<'a>> = Vec::new();
    for f in r.figures.iter().filter(|f| {
        f.key.suite == set.suite
            && f.key.bs == bs
            && f.key.rw == rw
            && f.key.qd > 0
            && set.shows(f.key.imp, &f.key.target)
    }) {
        let who = match f.key.imp {
            Impl::Qemu => "QEMU",
            _ => "ours",
        };
        let name = format!("{who} {}", f.key.target);
        match out.iter_mut().find(|l| l.name == name) {
            Some(l) => l.points.push(f),
            None => out.push(Line {
                name,
                qemu: f.key.imp == Impl::Qemu,
                colour: colour(f.key.imp, &f.key.target),
                points: vec![f],
            }),
        }
    }
    for l in &mut out {
        l.points.sort_by_key(|f| f.key.qd);
    }
    out.sort_by_key(|l| {
        let f = l.points[0];
        compare::rank(f.key.imp, &f.key.target)
    });
    out
}

/// Range of a log axis that holds every value, widened to whole decades: plotters labels a
/// log axis from its first power of ten on, so a range starting inside a decade would leave
/// its lowest points without a label.
fn log_range(values: impl Iterator<Item = f64>) -> Option<std::ops::Range<f64>> {
    let (lo, hi) = values
        .filter(|v| *v > 0.0 && v.is_finite())
        .fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    (hi > 0.0).then(|| {
        let lo = 10f64.powf(lo.log10().floor());
        let hi = 10f64.powf(hi.log10().ceil()).max(lo * 10.0);
        lo..hi
    })
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// Draws one panel: `value` of each point (IOPS or latency) against queue depth.
fn panel(
    area: &Area,
    title: &str,
    y_desc: &str,
    data: &[Line],
    value: impl Fn(&Figure) -> Option<Stat>,
    y_fmt: &dyn Fn(&f64) -> String,
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<_>| e.to_string();
    let y = log_range(
        data.iter()
            .flat_map(|l| l.points.iter().filter_map(|f| value(f)))
            .flat_map(|s| [s.min, s.max]),
    );
    let Some(y) = y else {
        return Ok(());
    };
    let max_qd = compare::QUEUE_DEPTHS[compare::QUEUE_DEPTHS.len() - 1] as f64;
    let x = (0.8f64..max_qd * 1.3).log_scale().base(2.0);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x, y.log_scale())
        .map_err(err)?;
    let x_fmt = |q: &f64| format!("{q:.0}");
    chart
        .configure_mesh()
        .x_desc("queue depth")
        .y_desc(y_desc)
        .x_label_formatter(&x_fmt)
        .y_label_formatter(y_fmt)
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(err)?;
    for l in data {
        let c = l.colour;
        let pts: Vec<(f64, f64)> = l
            .points
            .iter()
            .filter_map(|f| Some((f64::from(f.key.qd), value(f)?.median)))
            .collect();
        let style = c.stroke_width(2);
        if l.qemu {
            chart
                .draw_series(DashedLineSeries::new(pts.clone(), 8, 5, style))
                .map_err(err)?;
        } else {
            chart
                .draw_series(LineSeries::new(pts.clone(), style))
                .map_err(err)?;
        }
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled())))
            .map_err(err)?;
        chart
            .draw_series(l.points.iter().filter_map(|f| {
                let s = value(f)?;
                let q = f64::from(f.key.qd);
                Some(PathElement::new(
                    vec![(q, s.min), (q, s.max)],
                    c.stroke_width(1),
                ))
            }))
            .map_err(err)?;
    }
    Ok(())
}

/// The legend, in a column of its own so it never hides a point.
fn legend(area: &Area, data: &[Line]) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<_>| e.to_string();
    for (i, l) in data.iter().enumerate() {
        let y = 60 + 24 * i as i32;
        let style = l.colour.stroke_width(2);
        if l.qemu {
            for x in [0, 12, 24] {
                area.draw(&PathElement::new(vec![(x, y), (x + 7, y)], style))
                    .map_err(err)?;
            }
        } else {
            area.draw(&PathElement::new(vec![(0, y), (30, y)], style))
                .map_err(err)?;
        }
        area.draw(&Text::new(l.name.clone(), (38, y - 7), ("sans-serif", 14)))
            .map_err(err)?;
    }
    Ok(())
}

/// The title of a set's chart at one size and pattern: "4 KiB randread in process".
pub fn title(set: &Charts, bs: u64, rw: &str) -> String {
    format!("{} KiB {rw} {}", bs / 1024, set.title)
}

/// The file name of a set's chart at one size and pattern: "nbd-shm-4k-randread.svg".
pub fn file_name(set: &Charts, bs: u64, rw: &str) -> String {
    format!("{}-{}k-{rw}.svg", set.file, bs / 1024)
}

/// Writes the chart of one set of targets, size and pattern to `path`; `false` when none of
/// them was measured there.
pub fn chart(r: &Results, set: &Charts, bs: u64, rw: &str, path: &Path) -> Result<bool, String> {
    let data = lines(r, set, bs, rw);
    if data.is_empty() {
        return Ok(false);
    }
    let root = SVGBackend::new(path, (1400, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (panels, key) = root.split_horizontally(1180);
    let (left, right) = panels.split_horizontally(590);
    let title = title(set, bs, rw);
    let rate_fmt = |v: &f64| rate(*v);
    panel(
        &left,
        &format!("{title}: IOPS"),
        "IOPS",
        &data,
        |f| Some(f.iops),
        &rate_fmt,
    )?;
    let lat_fmt = |v: &f64| {
        if *v >= 1000.0 {
            format!("{:.0} ms", v / 1000.0)
        } else if *v >= 1.0 {
            format!("{v:.0} µs")
        } else {
            format!("{v:.2} µs")
        }
    };
    panel(
        &right,
        &format!("{title}: mean latency"),
        "mean latency",
        &data,
        |f| f.lat_us,
        &lat_fmt,
    )?;
    legend(&key, &data)?;
    root.present().map_err(|e| e.to_string())?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::tests::{results, s};
    use crate::compare::CHARTS;
    use crate::model::{Sample, Suite};

    /// Two runs of each target at every queue depth, with latencies.
    fn samples(suite: Suite, targets: &[(Impl, &str, f64)]) -> Vec<Sample> {
        let mut out = Vec::new();
        for qd in compare::QUEUE_DEPTHS {
            for &(imp, t, v) in targets {
                let mut a = s(
                    suite,
                    imp,
                    t,
                    "randread",
                    4096,
                    qd,
                    v * f64::from(qd).sqrt(),
                );
                a.lat_us = Some(f64::from(qd) / a.iops * 1e6);
                let mut b = a.clone();
                b.iops *= 1.1;
                out.extend([a, b]);
            }
        }
        out
    }

    /// A scratch directory of this test, removed by the caller.
    fn scratch(test: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("bench-report-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A legend entry of an SVG: the whole text of a text element (on a line of its own), so
    /// "ours null" is not found inside "ours quorum3-null".
    fn legend_has(svg: &str, name: &str) -> bool {
        svg.lines().any(|l| l.trim() == name)
    }

    /// Width-2 strokes (lines, not the min–max bars) in a target's colour: a solid line is one
    /// per panel plus the legend's, a dashed one is many dashes.
    fn strokes(svg: &str, imp: Impl, target: &str) -> usize {
        let c = colour(imp, target);
        let hex = format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2);
        svg.matches(&format!("stroke=\"{hex}\" stroke-width=\"2\""))
            .count()
    }

    #[test]
    fn chart_has_both_panels_and_every_line() {
        let r = results(&samples(
            Suite::Inprocess,
            &[
                (Impl::Ours, "quorum3-null", 1.0e6),
                (Impl::Ours, "null", 1.0e7),
                (Impl::Qemu, "quorum3-null-co", 2.0e5),
            ],
        ));
        let dir = scratch("chart");
        let path = dir.join("c.svg");
        assert!(chart(&r, &CHARTS[0], 4096, "randread", &path).unwrap());
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100]);
        for needle in [
            "4 KiB randread in process: IOPS",
            "4 KiB randread in process: mean latency",
            "ours quorum3-null",
            "ours null",
            "QEMU quorum3-null-co",
            "queue depth",
        ] {
            assert!(svg.contains(needle), "{needle} missing");
        }
        for set in &CHARTS[1..] {
            assert!(!chart(&r, set, 4096, "randread", &dir.join("none.svg")).unwrap());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn nbd_charts_split_null_and_file_targets() {
        let r = results(&samples(
            Suite::Nbd,
            &[
                (Impl::Ours, "quorum3-null", 1.0e5),
                (Impl::Ours, "null", 2.0e5),
                (Impl::Ours, "quorum3-aio-shm", 8.0e4),
                (Impl::Ours, "aio-shm", 1.2e5),
                (Impl::Qemu, "quorum3-null-co", 5.0e4),
                (Impl::Qemu, "null-co", 9.0e4),
                (Impl::Qemu, "quorum3-raw-shm", 4.0e4),
                (Impl::Qemu, "raw-shm", 7.0e4),
            ],
        ));
        let dir = scratch("nbd-charts");
        let mut svgs = Vec::new();
        for set in CHARTS.iter().filter(|c| c.suite == Suite::Nbd) {
            let path = dir.join(file_name(set, 4096, "randread"));
            assert!(chart(&r, set, 4096, "randread", &path).unwrap());
            svgs.push(std::fs::read_to_string(&path).unwrap());
        }
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        std::fs::remove_dir_all(&dir).unwrap();
        names.sort();
        assert_eq!(names, ["nbd-4k-randread.svg", "nbd-shm-4k-randread.svg"]);

        let [null, shm] = &svgs[..] else {
            panic!("two NBD charts")
        };
        for needle in [
            "4 KiB randread over NBD, null children: IOPS",
            "4 KiB randread over NBD, null children: mean latency",
        ] {
            assert!(null.contains(needle), "{needle} missing");
        }
        for needle in [
            "4 KiB randread over NBD, /dev/shm files: IOPS",
            "4 KiB randread over NBD, /dev/shm files: mean latency",
        ] {
            assert!(shm.contains(needle), "{needle} missing");
        }
        let null_lines = [
            "ours quorum3-null",
            "ours null",
            "QEMU quorum3-null-co",
            "QEMU null-co",
        ];
        let shm_lines = [
            "ours quorum3-aio-shm",
            "ours aio-shm",
            "QEMU quorum3-raw-shm",
            "QEMU raw-shm",
        ];
        for name in null_lines {
            assert!(legend_has(null, name) && !legend_has(shm, name), "{name}");
        }
        for name in shm_lines {
            assert!(legend_has(shm, name) && !legend_has(null, name), "{name}");
        }
        // Ours solid (two panels and the legend), QEMU's dashed, each in its target's colour.
        for t in ["quorum3-aio-shm", "aio-shm"] {
            assert_eq!(strokes(shm, Impl::Ours, t), 3, "{t}");
            assert_eq!(strokes(null, Impl::Ours, t), 0, "{t}");
        }
        for t in ["quorum3-raw-shm", "raw-shm"] {
            assert!(strokes(shm, Impl::Qemu, t) > 10, "{t}");
            assert_eq!(strokes(null, Impl::Qemu, t), 0, "{t}");
        }
    }
}
