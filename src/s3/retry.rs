//! The retry policy: which waits come between attempts, and the time limits of one
//! attempt and of the whole call. Which failures are tried again is the failure's own
//! answer ([`Retryable`]), so any request type can use the policy.
//!
//! # Schedule
//!
//! Failures other than throttling are retried at most `max_retries` times, after
//! waits drawn from the upper half of 100 ms, 200 ms, 400 ms, … (doubling, at most
//! 20 s). Throttling (503 `SlowDown`, 429, 503 with `Retry-After`) has a budget of its
//! own: it is retried for as long as the call's deadline allows, after waits drawn from
//! the upper half of 500 ms, 1 s, 2 s, … (at most 20 s), and never sooner than the
//! server's `Retry-After`. Every attempt first takes a slot from the store's
//! [`RateLimiter`], outside the attempt's time limit. No wait is begun that would end
//! past the deadline: the call returns its last failure instead.

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use tokio::time::Instant;

use super::error::AttemptError;
use super::limiter::RateLimiter;

/// What the policy needs to know of a failed attempt.
pub(crate) trait Retryable {
    /// Whether another attempt may succeed.
    fn is_retryable(&self) -> bool;
    /// Whether the server asked the client to slow down.
    fn is_throttle(&self) -> bool;
    /// The wait the server asked for, if it did.
    fn retry_after(&self) -> Option<Duration>;
    /// The failure of an attempt that ran out of time.
    fn timed_out() -> Self;
    /// The failure of a request the rate limiter could not fit before the deadline.
    fn rate_limited(rate: f64) -> Self;
}

impl Retryable for AttemptError {
    fn is_retryable(&self) -> bool {
        AttemptError::is_retryable(self)
    }
    fn is_throttle(&self) -> bool {
        AttemptError::is_throttle(self)
    }
    fn retry_after(&self) -> Option<Duration> {
        AttemptError::retry_after(self)
    }
    fn timed_out() -> Self {
        AttemptError::TimedOut
    }
    fn rate_limited(rate: f64) -> Self {
        AttemptError::RateLimited(rate)
    }
}

/// Retries after the first attempt, per-attempt and whole-call time limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryPolicy {
    /// Retries of failures other than throttling.
    pub(crate) max_retries: u32,
    pub(crate) attempt_timeout: Duration,
    pub(crate) deadline: Duration,
}

/// The first wait after a failure; each retry doubles it, up to [`MAX_BACKOFF`].
const BASE_BACKOFF: Duration = Duration::from_millis(100);
/// The first wait after throttling.
const BASE_THROTTLE_BACKOFF: Duration = Duration::from_millis(500);
/// The longest wait between two attempts (as in the AWS SDKs' standard mode).
const MAX_BACKOFF: Duration = Duration::from_secs(20);
/// How late a sleep may end: tokio's timer wheel counts whole milliseconds.
const TIMER_GRANULARITY: Duration = Duration::from_millis(1);

/// The wait before the `n`th retry (1-based) from `base`: exponential, with jitter over
/// its upper half so that many clients retrying at once spread out.
fn jittered(base: Duration, n: u32) -> Duration {
    let ceiling = base
        .saturating_mul(
            1u32.checked_shl(n.saturating_sub(1).min(16))
                .unwrap_or(u32::MAX),
        )
        .min(MAX_BACKOFF);
    let random = RandomState::new().build_hasher().finish();
    let half = ceiling / 2;
    half + Duration::from_nanos(random % (half.as_nanos() as u64).max(1))
}

/// The wait before retry `n` of a failure other than throttling.
pub(crate) fn backoff(n: u32) -> Duration {
    jittered(BASE_BACKOFF, n)
}

/// The wait before retry `n` after throttling.
pub(crate) fn throttle_backoff(n: u32) -> Duration {
    jittered(BASE_THROTTLE_BACKOFF, n)
}

impl RetryPolicy {
    /// The moment a call that starts now must be done by: every request the call makes,
    /// retries included, shares it.
    pub(crate) fn deadline(&self) -> Instant {
        Instant::now() + self.deadline
    }

    /// Runs `attempt` until it succeeds, fails in a way retrying cannot help, runs out of
    /// retries, or `deadline` comes. Each attempt first waits for its slot in `limiter`
    /// and tells it of throttling. `on_retry` hears of every retry before its wait: the
    /// failure, the retry's number (1 for the second attempt) and the wait.
    pub(crate) async fn run<T, E, F, Fut>(
        &self,
        deadline: Instant,
        limiter: &RateLimiter,
        mut attempt: F,
        mut on_retry: impl FnMut(&E, u32, Duration),
    ) -> Result<T, E>
    where
        E: Retryable,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut retries = 0;
        let mut throttles = 0;
        let mut last: Option<E> = None;
        loop {
            let admitted = match limiter.admit(deadline).await {
                Ok(admitted) => admitted,
                Err(rate) => return Err(last.unwrap_or_else(|| E::rate_limited(rate))),
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(last.unwrap_or_else(E::timed_out));
            }
            let failure =
                match tokio::time::timeout(self.attempt_timeout.min(remaining), attempt()).await {
                    Ok(Ok(value)) => return Ok(value),
                    Ok(Err(failure)) => failure,
                    Err(_) => E::timed_out(),
                };
            if !failure.is_retryable() {
                return Err(failure);
            }
            let wait = if failure.is_throttle() {
                limiter.throttled(admitted);
                throttles += 1;
                throttle_backoff(throttles).max(failure.retry_after().unwrap_or_default())
            } else {
                if retries >= self.max_retries {
                    return Err(failure);
                }
                retries += 1;
                backoff(retries).max(failure.retry_after().unwrap_or_default())
            };
            // Tokio's timers fire on whole milliseconds, rounded up: allow for it.
            if Instant::now() + wait + TIMER_GRANULARITY >= deadline {
                return Err(failure);
            }
            on_retry(&failure, retries + throttles, wait);
            last = Some(failure);
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(status: u16) -> AttemptError {
        AttemptError::Reply(Box::new(super::super::error::S3Failure::parse(status, "")))
    }

    fn unlimited() -> RateLimiter {
        RateLimiter::new(super::super::limiter::Limits {
            max_per_second: None,
            adaptive: true,
        })
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    /// A retryable failure whose next wait would end past the deadline is returned at
    /// once, as itself: the call never sleeps beyond its deadline.
    #[test]
    fn a_wait_past_the_deadline_returns_the_last_failure() {
        let policy = RetryPolicy {
            max_retries: 100,
            attempt_timeout: Duration::from_secs(5),
            deadline: Duration::from_millis(200),
        };
        let mut attempts = 0;
        // Paused time: the clock moves only by the waits, so the bound is exact.
        let (result, elapsed): (Result<(), AttemptError>, Duration) = paused().block_on(async {
            let started = Instant::now();
            let result = policy
                .run(
                    policy.deadline(),
                    &unlimited(),
                    || {
                        attempts += 1;
                        async { Err(failure(500)) }
                    },
                    |_, _, _| {},
                )
                .await;
            (result, started.elapsed())
        });
        assert!(
            matches!(&result, Err(AttemptError::Reply(r)) if r.status == 500),
            "{result:?}"
        );
        assert!(elapsed < Duration::from_millis(200), "{elapsed:?}");
        // Waits of 50-100 and 100-200 ms: at most two fit in 200 ms.
        assert!((2..=3).contains(&attempts), "{attempts} attempts");
    }

    #[test]
    fn retries_stop_at_max_retries_and_success_ends_the_loop() {
        let policy = RetryPolicy {
            max_retries: 2,
            attempt_timeout: Duration::from_secs(5),
            deadline: Duration::from_secs(30),
        };
        let mut attempts = 0;
        let result: Result<(), AttemptError> = runtime().block_on(async {
            policy
                .run(
                    policy.deadline(),
                    &unlimited(),
                    || {
                        attempts += 1;
                        async { Err(failure(500)) }
                    },
                    |_, _, _| {},
                )
                .await
        });
        assert!(result.is_err());
        assert_eq!(attempts, 3);
        let mut attempts = 0;
        let result = runtime().block_on(async {
            policy
                .run(
                    policy.deadline(),
                    &unlimited(),
                    || {
                        attempts += 1;
                        let n = attempts;
                        async move {
                            if n < 2 {
                                Err(failure(503))
                            } else {
                                Ok(n)
                            }
                        }
                    },
                    |_, _, _| {},
                )
                .await
        });
        assert_eq!(result.unwrap(), 2);
    }

    fn throttle(status: u16, code: &str, retry_after: Option<Duration>) -> AttemptError {
        let mut f = super::super::error::S3Failure::parse(
            status,
            &format!("<Error><Code>{code}</Code></Error>"),
        );
        f.retry_after = retry_after;
        AttemptError::Reply(Box::new(f))
    }

    fn paused() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
    }

    /// Throttling is retried past `max_retries`, for as long as the deadline allows,
    /// with waits that grow to 20 s; the limiter hears of it.
    #[test]
    fn throttling_has_its_own_budget_bounded_by_the_deadline() {
        let policy = RetryPolicy {
            max_retries: 1,
            attempt_timeout: Duration::from_secs(5),
            deadline: Duration::from_secs(120),
        };
        let limiter = unlimited();
        let mut waits = Vec::new();
        let mut limited = Vec::new();
        let result: Result<u32, AttemptError> = paused().block_on(async {
            let mut attempts = 0;
            policy
                .run(
                    policy.deadline(),
                    &limiter,
                    || {
                        attempts += 1;
                        let n = attempts;
                        async move {
                            match n {
                                1..=3 => Err(throttle(503, "SlowDown", None)),
                                4..=6 => Err(throttle(429, "TooManyRequests", None)),
                                _ => Ok(n),
                            }
                        }
                    },
                    |_, _, wait| {
                        waits.push(wait);
                        limited.push(limiter.current().is_some());
                    },
                )
                .await
        });
        assert_eq!(
            result.unwrap(),
            7,
            "six throttles retried with max_retries = 1"
        );
        let ceilings = [500, 1000, 2000, 4000, 8000, 16000];
        for (wait, ceiling) in waits.iter().zip(ceilings) {
            let ceiling = Duration::from_millis(ceiling);
            assert!(*wait >= ceiling / 2 && *wait <= ceiling, "{waits:?}");
        }
        assert!(limited[0], "the first throttle slowed the store down");
    }

    /// `Retry-After` sets the least wait; one that would end past the deadline ends the
    /// call at once with the throttle.
    #[test]
    fn retry_after_is_honoured_within_the_deadline() {
        let policy = RetryPolicy {
            max_retries: 3,
            attempt_timeout: Duration::from_secs(5),
            deadline: Duration::from_secs(30),
        };
        let limiter = unlimited();
        let (result, elapsed) = paused().block_on(async {
            let started = Instant::now();
            let mut attempts = 0;
            let r: Result<u32, AttemptError> = policy
                .run(
                    policy.deadline(),
                    &limiter,
                    || {
                        attempts += 1;
                        let n = attempts;
                        async move {
                            if n == 1 {
                                Err(throttle(
                                    503,
                                    "ServiceUnavailable",
                                    Some(Duration::from_secs(7)),
                                ))
                            } else {
                                Ok(n)
                            }
                        }
                    },
                    |_, _, _| {},
                )
                .await;
            (r, started.elapsed())
        });
        assert_eq!(result.unwrap(), 2);
        assert!(elapsed >= Duration::from_secs(7), "{elapsed:?}");
        let (result, elapsed) = paused().block_on(async {
            let started = Instant::now();
            let r: Result<u32, AttemptError> = policy
                .run(
                    policy.deadline(),
                    &limiter,
                    || async { Err(throttle(503, "SlowDown", Some(Duration::from_secs(60)))) },
                    |_, _, _| {},
                )
                .await;
            (r, started.elapsed())
        });
        assert!(matches!(&result, Err(e) if e.is_throttle()), "{result:?}");
        assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
    }

    #[test]
    fn backoff_grows_with_jitter_and_a_cap() {
        for n in 1..40 {
            let ceiling = (BASE_BACKOFF * 2u32.pow((n - 1).min(10))).min(MAX_BACKOFF);
            let wait = backoff(n);
            assert!(
                wait >= ceiling / 2 && wait <= ceiling,
                "retry {n}: {wait:?} outside {ceiling:?}"
            );
        }
        let distinct: std::collections::HashSet<Duration> = (0..20).map(|_| backoff(3)).collect();
        assert!(distinct.len() > 1, "no jitter");
    }
}
