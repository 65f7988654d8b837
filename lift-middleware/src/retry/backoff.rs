//! Delays between attempts: the backoff curve and its jitter.

use std::sync::Arc;
use std::time::Duration;

/// The delay before retry number `n` (1 for the first retry), before jitter.
#[derive(Clone)]
#[non_exhaustive]
pub enum Backoff {
    /// Always the same delay.
    Fixed(Duration),
    /// `initial + step * (n - 1)`.
    Linear {
        /// The first delay.
        initial: Duration,
        /// Added per retry.
        step: Duration,
    },
    /// `initial * factor^(n - 1)`.
    Exponential {
        /// The first delay.
        initial: Duration,
        /// The growth per retry (at least 1).
        factor: f64,
    },
    /// Your own curve.
    Custom(Arc<dyn Fn(u32) -> Duration + Send + Sync>),
}

impl std::fmt::Debug for Backoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backoff::Fixed(d) => write!(f, "Fixed({d:?})"),
            Backoff::Linear { initial, step } => write!(f, "Linear({initial:?}, +{step:?})"),
            Backoff::Exponential { initial, factor } => {
                write!(f, "Exponential({initial:?}, x{factor})")
            }
            Backoff::Custom(_) => f.write_str("Custom"),
        }
    }
}

impl Backoff {
    /// The delay before retry `n` (1-based), capped at `max`.
    pub fn delay(&self, n: u32, max: Duration) -> Duration {
        let n = n.max(1);
        let raw = match self {
            Backoff::Fixed(d) => *d,
            Backoff::Linear { initial, step } => initial.saturating_add(step.saturating_mul(n - 1)),
            Backoff::Exponential { initial, factor } => {
                let scale = factor.powi((n - 1).min(1000) as i32);
                if scale.is_finite() && initial.as_secs_f64() * scale < max.as_secs_f64() {
                    initial.mul_f64(scale)
                } else {
                    max
                }
            }
            Backoff::Custom(f) => f(n),
        };
        raw.min(max)
    }
}

/// How a delay is randomised, so that many clients do not retry in step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Jitter {
    /// The delay as computed.
    None,
    /// Anywhere in `[0, delay]`.
    #[default]
    Full,
    /// In `[delay / 2, delay]`.
    Equal,
    /// In `[base, previous * 3]`, capped (the "decorrelated" scheme).
    Decorrelated,
}

impl Jitter {
    /// Applies the jitter to `delay`; `previous` is the last delay slept (for
    /// decorrelated), `base` the backoff's first delay.
    pub fn apply(
        self,
        delay: Duration,
        previous: Duration,
        base: Duration,
        max: Duration,
        rng: &mut fastrand::Rng,
    ) -> Duration {
        let between = |low: Duration, high: Duration, rng: &mut fastrand::Rng| {
            if high <= low {
                return low;
            }
            let span = (high - low).as_nanos().min(u128::from(u64::MAX)) as u64;
            low + Duration::from_nanos(rng.u64(0..=span))
        };
        match self {
            Jitter::None => delay,
            Jitter::Full => between(Duration::ZERO, delay, rng),
            Jitter::Equal => between(delay / 2, delay, rng),
            Jitter::Decorrelated => {
                let high = previous.max(base).saturating_mul(3).min(max);
                between(base.min(high), high, rng)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_secs(10);

    #[test]
    fn curves() {
        let ms = Duration::from_millis;
        assert_eq!(Backoff::Fixed(ms(100)).delay(5, MAX), ms(100));
        let linear = Backoff::Linear {
            initial: ms(100),
            step: ms(50),
        };
        assert_eq!(linear.delay(1, MAX), ms(100));
        assert_eq!(linear.delay(3, MAX), ms(200));
        let exponential = Backoff::Exponential {
            initial: ms(100),
            factor: 2.0,
        };
        assert_eq!(exponential.delay(1, MAX), ms(100));
        assert_eq!(exponential.delay(4, MAX), ms(800));
        assert_eq!(exponential.delay(60, MAX), MAX, "capped, no overflow");
        let custom = Backoff::Custom(Arc::new(|n| Duration::from_secs(u64::from(n) * 100)));
        assert_eq!(custom.delay(1, MAX), MAX);
    }

    #[test]
    fn jitter_stays_in_its_range() {
        let mut rng = fastrand::Rng::with_seed(7);
        let d = Duration::from_millis(400);
        for _ in 0..1000 {
            assert!(Jitter::Full.apply(d, d, d, MAX, &mut rng) <= d);
            let equal = Jitter::Equal.apply(d, d, d, MAX, &mut rng);
            assert!(equal >= d / 2 && equal <= d);
            let base = Duration::from_millis(100);
            let dec = Jitter::Decorrelated.apply(d, d, base, MAX, &mut rng);
            assert!(dec >= base && dec <= d * 3);
        }
        assert_eq!(Jitter::None.apply(d, d, d, MAX, &mut rng), d);
    }
}
