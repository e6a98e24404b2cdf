//! The bdev graph: a stacking bdev (quorum, error, delay, passthru and those to come) takes
//! each base through [`BdevRegistry::claim_base`], which records the bdev on top in the claim.
//! A bdev has at most one claim, so following claims upwards from any bdev is a single path;
//! a new edge `parent -> base` closes a loop exactly when `base` is on that path from
//! `parent`. A loop would make the first I/O recurse through the stack until the reactor's
//! stack overflows, so it is refused before anything is claimed.

use super::{Bdev, BdevError, BdevRegistry};

impl BdevRegistry {
    /// Claims `base` for `module`'s bdev `parent` (registered, or being built under that
    /// name): the one check every stacking method makes before it uses a base. Refused with
    /// [`BdevError::Loop`] (EINVAL) when `parent` already sits on `base`, directly or through
    /// other bdevs, or is `base` itself; with [`BdevError::Claimed`] (EBUSY) when someone
    /// else holds `base`. Nothing is claimed on refusal.
    pub fn claim_base(&self, parent: &str, base: &Bdev, module: &str) -> Result<(), BdevError> {
        if let Some(path) = self.path_up_to(parent, base.name()) {
            return Err(BdevError::Loop {
                path: loop_text(parent, &path),
            });
        }
        base.claim(module, parent)
    }

    /// The bdevs from `from` up through the claims to `target` (both included), if `target`
    /// is on that path. Bounded by the number of bdevs, so even a corrupt graph cannot make
    /// it spin.
    fn path_up_to(&self, from: &str, target: &str) -> Option<Vec<String>> {
        let mut path = vec![from.to_string()];
        for _ in 0..=self.list().len() {
            let current = path.last()?;
            if current == target {
                return Some(path);
            }
            let above = self.get(current).ok()?.stacked_on_by()?;
            path.push(above);
        }
        None
    }
}

/// "P -> X -> ... -> P": the loop `parent -> base` would close, given the claim path from
/// `parent` up to `base`, read downwards (each bdev followed by one of its bases).
fn loop_text(parent: &str, up: &[String]) -> String {
    std::iter::once(parent)
        .chain(up.iter().rev().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" -> ")
}

#[cfg(test)]
mod tests {
    use super::loop_text;

    #[test]
    fn loops_read_downwards_from_the_bdev_being_stacked() {
        assert_eq!(loop_text("C1", &["C1".into()]), "C1 -> C1");
        assert_eq!(
            loop_text("C1", &["C1".into(), "C2".into()]),
            "C1 -> C2 -> C1"
        );
        assert_eq!(
            loop_text("C1", &["C1".into(), "EE_C1".into(), "C3".into()]),
            "C1 -> C3 -> EE_C1 -> C1"
        );
    }
}
