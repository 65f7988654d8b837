//! The retry budget: a token bucket shared by every call through a layer.

use std::sync::atomic::{AtomicU32, Ordering};

/// A token bucket: each retry withdraws tokens, each success deposits one; an empty bucket
/// allows no retry. The standard figures are those of the AWS SDKs' standard retry mode:
/// 500 tokens, 5 per retry, 10 per retry after a timeout, 1 back per success.
#[derive(Debug)]
pub struct RetryBudget {
    tokens: AtomicU32,
    capacity: u32,
    retry_cost: u32,
    timeout_cost: u32,
}

impl RetryBudget {
    /// A bucket of `capacity` tokens, full.
    pub fn new(capacity: u32, retry_cost: u32, timeout_cost: u32) -> Self {
        RetryBudget {
            tokens: AtomicU32::new(capacity),
            capacity,
            retry_cost,
            timeout_cost,
        }
    }

    /// 500 tokens, 5 per retry, 10 per retry after a timeout.
    pub fn standard() -> Self {
        Self::new(500, 5, 10)
    }

    /// Tokens left.
    pub fn available(&self) -> u32 {
        self.tokens.load(Ordering::Acquire)
    }

    /// Takes the cost of one retry; `false` (and nothing taken) when the bucket cannot pay.
    pub fn withdraw(&self, after_timeout: bool) -> bool {
        let cost = if after_timeout {
            self.timeout_cost
        } else {
            self.retry_cost
        };
        self.tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| t.checked_sub(cost))
            .is_ok()
    }

    /// Gives one token back, up to the capacity.
    pub fn deposit(&self) {
        let _ = self
            .tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                (t < self.capacity).then_some(t + 1)
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn withdraws_until_empty_and_refills_slowly() {
        let budget = RetryBudget::new(12, 5, 10);
        assert!(budget.withdraw(false));
        assert!(!budget.withdraw(true), "7 tokens cannot pay 10");
        assert!(budget.withdraw(false));
        assert!(!budget.withdraw(false));
        assert_eq!(budget.available(), 2);
        for _ in 0..20 {
            budget.deposit();
        }
        assert_eq!(budget.available(), 12, "capped at capacity");
    }
}
