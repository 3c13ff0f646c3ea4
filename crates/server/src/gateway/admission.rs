//! Who may open one more WebSocket session: at most `max_total` on this instance and
//! `max_per_address` from one client address (0: no limit). The decision is
//! [`admit_one`], a pure function; [`Admission`] keeps the counts, and each admitted
//! session holds an [`Admitted`] guard that gives its place back when dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// Why an upgrade is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    Instance,
    Address,
}

impl Refusal {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Instance => "instance_limit",
            Self::Address => "address_limit",
        }
    }
}

/// Whether one more session fits, given the sessions open in all and from its address.
pub(crate) fn admit_one(
    total: usize,
    from_address: usize,
    max_total: usize,
    max_per_address: usize,
) -> Result<(), Refusal> {
    if max_total != 0 && total >= max_total {
        return Err(Refusal::Instance);
    }
    if max_per_address != 0 && from_address >= max_per_address {
        return Err(Refusal::Address);
    }
    Ok(())
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// The open sessions of this instance, in all and by client address.
#[derive(Debug)]
pub(crate) struct Admission {
    max_total: usize,
    max_per_address: usize,
    counts: Mutex<Counts>,
}

/// One admitted session; dropping it gives the place back.
#[derive(Debug)]
pub(crate) struct Admitted {
    admission: Arc<Admission>,
    address: Option<IpAddr>,
}

impl Admission {
    pub(crate) fn new(max_total: usize, max_per_address: usize) -> Self {
        Self {
            max_total,
            max_per_address,
            counts: Mutex::new(Counts::default()),
        }
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A place for one session from `address` (`None`: unknown, only the instance limit
    /// applies).
    pub(crate) fn admit(self: &Arc<Self>, address: Option<IpAddr>) -> Result<Admitted, Refusal> {
        let mut counts = self.counts();
        let from_address = address.map_or(0, |a| counts.by_address.get(&a).copied().unwrap_or(0));
        let per_address = if address.is_some() {
            self.max_per_address
        } else {
            0
        };
        admit_one(counts.total, from_address, self.max_total, per_address)?;
        counts.total += 1;
        if let Some(address) = address {
            *counts.by_address.entry(address).or_default() += 1;
        }
        Ok(Admitted {
            admission: self.clone(),
            address,
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut counts = self.admission.counts();
        counts.total = counts.total.saturating_sub(1);
        if let Some(address) = self.address
            && let Some(n) = counts.by_address.get_mut(&address)
        {
            *n -= 1;
            if *n == 0 {
                counts.by_address.remove(&address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admission_table() {
        // (open in all, open from the address, max in all, max per address) → outcome
        let table = [
            (0, 0, 0, 0, Ok(())),
            (10_000, 10_000, 0, 0, Ok(())),
            (4, 1, 5, 2, Ok(())),
            (5, 0, 5, 2, Err(Refusal::Instance)),
            (4, 2, 5, 2, Err(Refusal::Address)),
            (5, 2, 5, 2, Err(Refusal::Instance)),
            (100, 2, 0, 2, Err(Refusal::Address)),
        ];
        for (total, from, max_total, max_per, expected) in table {
            assert_eq!(
                admit_one(total, from, max_total, max_per),
                expected,
                "{total} {from} {max_total} {max_per}"
            );
        }
    }

    #[test]
    fn places_come_back_when_sessions_end() {
        let admission = Arc::new(Admission::new(3, 2));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = admission.admit(Some(a)).unwrap();
        let _second = admission.admit(Some(a)).unwrap();
        assert_eq!(admission.admit(Some(a)).unwrap_err(), Refusal::Address);
        let _third = admission.admit(Some(b)).unwrap();
        assert_eq!(admission.admit(Some(b)).unwrap_err(), Refusal::Instance);
        drop(first);
        assert!(admission.admit(Some(a)).is_ok(), "a's place came back");
        assert_eq!(admission.counts().by_address.get(&a), Some(&1));
    }
}
