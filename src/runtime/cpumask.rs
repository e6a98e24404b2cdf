//! Core-mask parsing in SPDK's two spellings, so `-m 0x3` and `-m [0,1]` mean what SPDK users expect.

use thiserror::Error;

/// Why a core mask was refused; the text is shown to the user as is.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CpuMaskError {
    /// The mask could not be read at all.
    #[error("invalid core mask '{0}': expected a hex mask like 0x3 or a list like [0,1]")]
    Syntax(String),
    /// The mask selects no core.
    #[error("core mask '{0}' selects no core")]
    Empty(String),
    /// The mask names a core this machine does not have.
    #[error("core mask '{mask}' names core {core}, but this machine has {online} cores")]
    NoSuchCore {
        /// The mask as given.
        mask: String,
        /// The first core that does not exist.
        core: usize,
        /// Cores online.
        online: usize,
    },
}

/// Parses `0x3`, `3` (hex, as SPDK), `[0,1]` or `[0-3,5]` into a sorted list of core ids.
pub fn parse_cpumask(mask: &str) -> Result<Vec<usize>, CpuMaskError> {
    let text = mask.trim();
    let syntax = || CpuMaskError::Syntax(mask.to_string());
    let mut cores = Vec::new();
    if let Some(list) = text.strip_prefix('[') {
        let list = list.strip_suffix(']').ok_or_else(syntax)?;
        for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.split_once('-') {
                Some((lo, hi)) => {
                    let lo: usize = lo.trim().parse().map_err(|_| syntax())?;
                    let hi: usize = hi.trim().parse().map_err(|_| syntax())?;
                    if lo > hi || hi >= 1024 {
                        return Err(syntax());
                    }
                    cores.extend(lo..=hi);
                }
                None => cores.push(part.parse().map_err(|_| syntax())?),
            }
        }
    } else {
        let hex = text
            .strip_prefix("0x")
            .or_else(|| text.strip_prefix("0X"))
            .unwrap_or(text);
        let bits = u128::from_str_radix(hex, 16).map_err(|_| syntax())?;
        cores.extend((0..128).filter(|i| bits & (1u128 << i) != 0));
    }
    cores.sort_unstable();
    cores.dedup();
    if cores.is_empty() {
        return Err(CpuMaskError::Empty(mask.to_string()));
    }
    let online = std::thread::available_parallelism().map_or(1, |n| n.get());
    if let Some(&core) = cores.iter().find(|&&c| c >= online) {
        return Err(CpuMaskError::NoSuchCore {
            mask: mask.to_string(),
            core,
            online,
        });
    }
    Ok(cores)
}

/// Formats a core list back as SPDK's hex mask, for `framework_get_reactors` and saved configs.
pub fn format_cpumask(cores: &[usize]) -> String {
    let bits = cores.iter().fold(0u128, |acc, &c| acc | (1u128 << c));
    format!("0x{bits:x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_list_forms_agree() {
        assert_eq!(parse_cpumask("0x1").unwrap(), vec![0]);
        assert_eq!(parse_cpumask("[0]").unwrap(), vec![0]);
        if std::thread::available_parallelism().unwrap().get() >= 2 {
            assert_eq!(parse_cpumask("0x3").unwrap(), vec![0, 1]);
            assert_eq!(parse_cpumask("[0,1]").unwrap(), vec![0, 1]);
            assert_eq!(parse_cpumask("[0-1]").unwrap(), vec![0, 1]);
            assert_eq!(format_cpumask(&[0, 1]), "0x3");
        }
    }

    #[test]
    fn bad_masks_are_refused_with_reason() {
        assert!(matches!(parse_cpumask("zz"), Err(CpuMaskError::Syntax(_))));
        assert!(matches!(parse_cpumask("[0,"), Err(CpuMaskError::Syntax(_))));
        assert!(matches!(parse_cpumask("0x0"), Err(CpuMaskError::Empty(_))));
        assert!(matches!(
            parse_cpumask("[1000]"),
            Err(CpuMaskError::NoSuchCore { .. })
        ));
    }
}
