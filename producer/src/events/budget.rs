//! The stream budget: event streams and waits hold a connection for long on purpose,
//! so they count against caps of their own, in all and per caller (an API key, or the
//! client address for status links and keyless intakes). Past a cap the request is
//! answered `429` with `Retry-After`; a [`StreamPermit`] frees its place when the
//! stream or wait ends, however it ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::auth::Caller;

/// Which cap refused a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The process's `events.max_streams`.
    Total,
    /// The caller's `events.max_streams_per_key`.
    PerKey,
}

impl Refusal {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Total => "total",
            Refusal::PerKey => "per_key",
        }
    }
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_caller: HashMap<Caller, usize>,
}

/// Open streams and waits, counted against the caps.
#[derive(Debug)]
pub struct StreamBudget {
    max_total: usize,
    max_per_caller: usize,
    open: Mutex<Open>,
}

impl StreamBudget {
    /// A budget of `max_total` streams, `max_per_caller` for one caller.
    pub fn new(max_total: usize, max_per_caller: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_caller,
            open: Mutex::new(Open::default()),
        })
    }

    /// Takes a place for `caller`, or says which cap is full.
    ///
    /// # Errors
    /// The cap that refused.
    pub fn acquire(self: &Arc<Self>, caller: &Caller) -> Result<StreamPermit, Refusal> {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if open.total >= self.max_total {
            return Err(Refusal::Total);
        }
        let mine = open.by_caller.get(caller).copied().unwrap_or(0);
        if mine >= self.max_per_caller {
            return Err(Refusal::PerKey);
        }
        open.total += 1;
        *open.by_caller.entry(caller.clone()).or_default() += 1;
        metrics::gauge!("conveyor_event_streams_open").increment(1.0);
        Ok(StreamPermit {
            budget: Arc::clone(self),
            caller: caller.clone(),
        })
    }

    /// Streams and waits open now.
    pub fn open(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .total
    }
}

/// One open stream's place in the budget; freed when dropped.
#[derive(Debug)]
pub struct StreamPermit {
    budget: Arc<StreamBudget>,
    caller: Caller,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut open = self
            .budget
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_caller.get_mut(&self.caller) {
            *n -= 1;
            if *n == 0 {
                open.by_caller.remove(&self.caller);
            }
        }
        metrics::gauge!("conveyor_event_streams_open").decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    fn key(n: u8) -> Caller {
        Caller::Configured(format!("producer.api_keys[{n}]"))
    }

    #[test]
    fn a_caller_past_its_cap_is_refused_until_one_of_its_streams_ends() {
        let budget = StreamBudget::new(10, 2);
        let first = budget.acquire(&key(0)).unwrap();
        let _second = budget.acquire(&key(0)).unwrap();
        assert_eq!(budget.acquire(&key(0)).unwrap_err(), Refusal::PerKey);
        assert!(
            budget.acquire(&key(1)).is_ok(),
            "another key has its own cap"
        );
        drop(first);
        assert!(budget.acquire(&key(0)).is_ok());
    }

    #[test]
    fn the_total_cap_holds_across_callers() {
        let budget = StreamBudget::new(2, 2);
        let _a = budget.acquire(&key(0)).unwrap();
        let _b = budget
            .acquire(&Caller::Address(IpAddr::from([127, 0, 0, 1])))
            .unwrap();
        assert_eq!(budget.acquire(&key(1)).unwrap_err(), Refusal::Total);
        assert_eq!(budget.open(), 2);
    }
}
