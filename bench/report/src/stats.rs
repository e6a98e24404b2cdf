//! Folds the runs of each point into one figure: the median (robust to one disturbed run on
//! a shared machine) with the min and max beside it, so noise stays visible.

use std::collections::BTreeMap;

use crate::model::{Figure, Key, Sample, Stat};

/// Median, min and max of `values`; `None` when there are none.
pub fn stat(values: &[f64]) -> Option<Stat> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Stat {
        median,
        min: v[0],
        max: v[n - 1],
    })
}

/// Groups samples by point, in key order, and summarizes each group.
pub fn figures(samples: &[Sample]) -> Vec<Figure> {
    let mut groups: BTreeMap<&Key, Vec<&Sample>> = BTreeMap::new();
    for s in samples {
        groups.entry(&s.key).or_default().push(s);
    }
    groups
        .into_iter()
        .filter_map(|(key, runs)| {
            let iops: Vec<f64> = runs.iter().map(|s| s.iops).collect();
            let lat: Vec<f64> = runs.iter().filter_map(|s| s.lat_us).collect();
            Some(Figure {
                key: key.clone(),
                iops: stat(&iops)?,
                lat_us: stat(&lat),
                lat_derived: runs.iter().any(|s| s.lat_derived),
                runs: iops,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Impl, Suite};

    fn sample(target: &str, iops: f64, lat: Option<f64>) -> Sample {
        Sample {
            key: Key {
                suite: Suite::Inprocess,
                imp: Impl::Ours,
                target: target.into(),
                rw: "randread".into(),
                bs: 4096,
                qd: 128,
            },
            iops,
            lat_us: lat,
            lat_derived: false,
        }
    }

    #[test]
    fn median_min_max_for_odd_and_even_counts() {
        let s = stat(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        let s = stat(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 4.0));
        assert!(stat(&[]).is_none());
    }

    #[test]
    fn runs_of_one_point_become_one_figure_in_run_order() {
        let samples = [
            sample("b", 10.0, Some(5.0)),
            sample("a", 30.0, None),
            sample("b", 30.0, Some(7.0)),
            sample("b", 20.0, Some(6.0)),
        ];
        let f = figures(&samples);
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].key.target, "a");
        assert!(f[0].lat_us.is_none());
        assert_eq!(f[1].runs, [10.0, 30.0, 20.0]);
        assert_eq!(f[1].iops.median, 20.0);
        assert_eq!(f[1].lat_us.unwrap().median, 6.0);
    }
}
