//! The retry schedule: when a deferred message is tried again, and when it expires.

use std::time::Duration;

/// Backoff between attempts and the lifetime of a message in the queue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetrySchedule {
    /// Delay before the first retry.
    pub first: Duration,
    /// Longest delay between two attempts.
    pub max: Duration,
    /// Past this age, a message still undelivered fails for good (DSN "expired").
    pub expiry: Duration,
    /// Random spread of each delay, as a fraction (0.1: ±10%), so that messages deferred
    /// together do not come back together.
    pub jitter: f64,
}

impl Default for RetrySchedule {
    fn default() -> Self {
        RetrySchedule {
            first: Duration::from_secs(5 * 60),
            max: Duration::from_secs(3600),
            expiry: Duration::from_secs(5 * 86400),
            jitter: 0.1,
        }
    }
}

impl RetrySchedule {
    /// The delay after failed attempt number `attempt` (1 for the first failure): `first`
    /// doubled at each attempt, capped at `max`, then spread by `jitter`. `unit` in
    /// [-1, 1] chooses where in the spread (the caller draws it at random; tests pick
    /// it), which keeps this function pure.
    pub fn next_delay(&self, attempt: u32, unit: f64) -> Duration {
        let doublings = attempt.saturating_sub(1).min(32);
        let base = self
            .first
            .checked_mul(1u32 << doublings.min(31))
            .unwrap_or(self.max)
            .min(self.max);
        let factor = 1.0 + self.jitter * unit.clamp(-1.0, 1.0);
        base.mul_f64(factor.max(0.0))
    }

    /// The delay after `attempt` with a random spread.
    pub fn next_delay_random(&self, attempt: u32) -> Duration {
        self.next_delay(attempt, rand::random::<f64>() * 2.0 - 1.0)
    }

    /// Whether a message of this age has run out of time.
    pub fn expired(&self, age: Duration) -> bool {
        age >= self.expiry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn delays_double_from_five_minutes_up_to_an_hour() {
        let s = RetrySchedule::default();
        let d: Vec<Duration> = (1..=7).map(|a| s.next_delay(a, 0.0)).collect();
        assert_eq!(
            d,
            vec![
                5 * MIN,
                10 * MIN,
                20 * MIN,
                40 * MIN,
                60 * MIN,
                60 * MIN,
                60 * MIN
            ]
        );
        assert_eq!(s.next_delay(u32::MAX, 0.0), 60 * MIN);
        assert_eq!(s.next_delay(0, 0.0), 5 * MIN);
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        let s = RetrySchedule::default();
        assert_eq!(s.next_delay(1, 1.0), Duration::from_secs(330));
        assert_eq!(s.next_delay(1, -1.0), Duration::from_secs(270));
        assert_eq!(s.next_delay(1, 7.0), Duration::from_secs(330));
        for _ in 0..1000 {
            let d = s.next_delay_random(3);
            assert!(d >= 18 * MIN && d <= 22 * MIN, "{d:?}");
        }
    }

    #[test]
    fn messages_expire_after_five_days() {
        let s = RetrySchedule::default();
        assert!(!s.expired(Duration::from_secs(5 * 86400 - 1)));
        assert!(s.expired(Duration::from_secs(5 * 86400)));
    }
}
