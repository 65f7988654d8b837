//! Circuit breaker configuration: typed, validated once by [`CircuitBreakerConfigBuilder::build`].

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{ConfigError, check};

/// How the breaker remembers recent calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Window {
    /// The last `size` calls.
    Count {
        /// How many calls.
        size: NonZeroU32,
    },
    /// The calls of the last `size`, counted in `buckets` slices.
    Time {
        /// How far back.
        size: Duration,
        /// How many slices (the window slides one slice at a time).
        buckets: NonZeroU32,
    },
}

/// A validated circuit breaker configuration.
#[derive(Debug, Clone)]
pub struct CircuitBreakerConfig {
    pub(crate) name: Arc<str>,
    pub(crate) consecutive_failures: Option<u32>,
    pub(crate) failure_rate: Option<f64>,
    pub(crate) slow_call_rate: Option<f64>,
    pub(crate) slow_call_duration: Duration,
    pub(crate) min_calls: u32,
    pub(crate) window: Window,
    pub(crate) open_for: Duration,
    pub(crate) backoff_multiplier: f64,
    pub(crate) max_open_for: Duration,
    pub(crate) half_open_max_calls: u32,
    pub(crate) half_open_successes: u32,
}

/// The longest a breaker stays open, backoff included.
const MAX_OPEN: Duration = Duration::from_secs(24 * 3600);

impl CircuitBreakerConfig {
    /// Starts a configuration for the breaker `name`.
    ///
    /// # Default
    /// Trips at a 50% failure rate over the last 100 calls once 20 calls were seen; no
    /// consecutive-failure or slow-call trigger (slow = over 5 s when enabled); stays open
    /// 30 s, without backoff (at most 5 min with one); half-open admits 3 probes at a time
    /// and closes after 3 successes.
    pub fn builder(name: &str) -> CircuitBreakerConfigBuilder {
        CircuitBreakerConfigBuilder {
            config: CircuitBreakerConfig {
                name: Arc::from(name),
                consecutive_failures: None,
                failure_rate: Some(0.5),
                slow_call_rate: None,
                slow_call_duration: Duration::from_secs(5),
                min_calls: 20,
                window: Window::Count {
                    size: NonZeroU32::new(100).unwrap_or(NonZeroU32::MIN),
                },
                open_for: Duration::from_secs(30),
                backoff_multiplier: 1.0,
                max_open_for: Duration::from_secs(300),
                half_open_max_calls: 3,
                half_open_successes: 3,
            },
        }
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The same configuration under another name: one breaker of a family (one per
    /// instance, say) that logs and reports under its own name.
    pub fn renamed(&self, name: &str) -> Self {
        CircuitBreakerConfig {
            name: Arc::from(name),
            ..self.clone()
        }
    }
}

/// Builds a [`CircuitBreakerConfig`]; see [`CircuitBreakerConfig::builder`] for defaults.
#[derive(Debug, Clone)]
pub struct CircuitBreakerConfigBuilder {
    config: CircuitBreakerConfig,
}

impl CircuitBreakerConfigBuilder {
    /// Trips after `n` failures in a row.
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.config.consecutive_failures = Some(n);
        self
    }
    /// Trips when at least this share (0, 1] of the window's calls failed.
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.config.failure_rate = Some(rate);
        self
    }
    /// Never trips on the failure rate (use with [`Self::consecutive_failures`]).
    pub fn no_failure_rate(mut self) -> Self {
        self.config.failure_rate = None;
        self
    }
    /// Trips when at least this share (0, 1] of the window's calls took longer than
    /// `slower_than`.
    pub fn slow_call_rate(mut self, rate: f64, slower_than: Duration) -> Self {
        self.config.slow_call_rate = Some(rate);
        self.config.slow_call_duration = slower_than;
        self
    }
    /// Rates count only once the window holds this many calls.
    pub fn min_calls(mut self, n: u32) -> Self {
        self.config.min_calls = n;
        self
    }
    /// How recent calls are remembered.
    pub fn window(mut self, window: Window) -> Self {
        self.config.window = window;
        self
    }
    /// How long the breaker stays open before probing (up to a day without
    /// [`open_backoff`](Self::open_backoff); at most its `max` with it).
    pub fn open_for(mut self, duration: Duration) -> Self {
        self.config.open_for = duration;
        self
    }
    /// Each trip in a row without a successful recovery multiplies the open time by
    /// `multiplier` (at least 1), up to `max`.
    pub fn open_backoff(mut self, multiplier: f64, max: Duration) -> Self {
        self.config.backoff_multiplier = multiplier;
        self.config.max_open_for = max;
        self
    }
    /// Half-open admits at most `max_calls` probes at once and closes after `successes`.
    pub fn half_open(mut self, max_calls: u32, successes: u32) -> Self {
        self.config.half_open_max_calls = max_calls;
        self.config.half_open_successes = successes;
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first field that is out of range or contradicts another.
    pub fn build(mut self) -> Result<CircuitBreakerConfig, ConfigError> {
        // Without backoff the open time is `open_for`, however long: the cap is backoff's.
        if self.config.backoff_multiplier == 1.0 {
            self.config.max_open_for = self.config.max_open_for.max(self.config.open_for);
        }
        let c = &self.config;
        let rate_ok = |r: Option<f64>| r.is_none_or(|r| r > 0.0 && r <= 1.0);
        check(rate_ok(c.failure_rate), "failure_rate", "must be in (0, 1]")?;
        check(
            rate_ok(c.slow_call_rate),
            "slow_call_rate",
            "must be in (0, 1]",
        )?;
        check(
            c.consecutive_failures != Some(0),
            "consecutive_failures",
            "must be at least 1",
        )?;
        check(c.min_calls >= 1, "min_calls", "must be at least 1")?;
        // A day at most: longer ("forever", `Duration::MAX`) overflowed the open time.
        check(
            !c.open_for.is_zero() && c.open_for <= MAX_OPEN,
            "open_for",
            "must be longer than zero and at most a day",
        )?;
        check(
            !c.slow_call_duration.is_zero(),
            "slow_call_duration",
            "must be longer than zero",
        )?;
        check(
            c.backoff_multiplier.is_finite() && c.backoff_multiplier >= 1.0,
            "open_backoff.multiplier",
            "must be a finite number of at least 1",
        )?;
        check(
            c.max_open_for >= c.open_for && c.max_open_for <= MAX_OPEN,
            "open_backoff.max",
            "must be at least open_for and at most a day",
        )?;
        check(
            c.half_open_max_calls >= 1,
            "half_open.max_calls",
            "must be at least 1",
        )?;
        check(
            c.half_open_successes >= 1,
            "half_open.successes",
            "must be at least 1",
        )?;
        if let Window::Time { size, buckets } = c.window {
            check(!size.is_zero(), "window.size", "must be longer than zero")?;
            check(
                size >= Duration::from_millis(u64::from(buckets.get())),
                "window.buckets",
                "each bucket must span at least 1 ms",
            )?;
        }
        if c.failure_rate.is_none()
            && c.slow_call_rate.is_none()
            && c.consecutive_failures.is_none()
        {
            return Err(ConfigError::Conflict {
                field: "failure_rate",
                reason: "no trip condition is set",
            });
        }
        Ok(self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_values_are_named() {
        let bad = |b: CircuitBreakerConfigBuilder| match b.build() {
            Err(ConfigError::OutOfRange { field, .. } | ConfigError::Conflict { field, .. }) => {
                field
            }
            other => panic!("accepted: {other:?}"),
        };
        let b = || CircuitBreakerConfig::builder("db");
        assert_eq!(bad(b().failure_rate(1.5)), "failure_rate");
        assert_eq!(bad(b().failure_rate(f64::NAN)), "failure_rate");
        assert_eq!(bad(b().min_calls(0)), "min_calls");
        assert_eq!(bad(b().open_for(Duration::ZERO)), "open_for");
        assert_eq!(bad(b().open_for(Duration::MAX)), "open_for");
        assert_eq!(
            bad(b().open_backoff(2.0, Duration::MAX)),
            "open_backoff.max"
        );
        assert_eq!(
            bad(b().open_backoff(0.5, Duration::from_secs(60))),
            "open_backoff.multiplier"
        );
        assert_eq!(
            bad(b().open_backoff(2.0, Duration::from_secs(1))),
            "open_backoff.max"
        );
        assert_eq!(bad(b().half_open(0, 1)), "half_open.max_calls");
        assert_eq!(bad(b().no_failure_rate()), "failure_rate");
        assert!(b().build().is_ok());
    }
}
