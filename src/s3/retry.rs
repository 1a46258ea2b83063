//! The retry policy: how long to wait between attempts, and the time limits of one
//! attempt and of the whole call. Which failures are tried again is the failure's own
//! answer ([`Retryable`]), so any request type can use the policy.

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use tokio::time::Instant;

use super::error::AttemptError;

/// What the policy needs to know of a failed attempt.
pub(crate) trait Retryable {
    /// Whether another attempt may succeed.
    fn is_retryable(&self) -> bool;
    /// The failure of an attempt that ran out of time.
    fn timed_out() -> Self;
}

impl Retryable for AttemptError {
    fn is_retryable(&self) -> bool {
        AttemptError::is_retryable(self)
    }
    fn timed_out() -> Self {
        AttemptError::TimedOut
    }
}

/// Retries after the first attempt, per-attempt and whole-call time limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryPolicy {
    pub(crate) max_retries: u32,
    pub(crate) attempt_timeout: Duration,
    pub(crate) deadline: Duration,
}

/// The first wait; each retry doubles it, up to [`MAX_BACKOFF`].
const BASE_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The wait before retry `n` (1-based): exponential, with jitter over its upper half so
/// that many clients retrying at once spread out.
pub(crate) fn backoff(n: u32) -> Duration {
    let ceiling = BASE_BACKOFF
        .saturating_mul(
            1u32.checked_shl(n.saturating_sub(1).min(16))
                .unwrap_or(u32::MAX),
        )
        .min(MAX_BACKOFF);
    let random = RandomState::new().build_hasher().finish();
    let half = ceiling / 2;
    half + Duration::from_nanos(random % (half.as_nanos() as u64).max(1))
}

impl RetryPolicy {
    /// The moment a call that starts now must be done by: every request the call makes,
    /// retries included, shares it.
    pub(crate) fn deadline(&self) -> Instant {
        Instant::now() + self.deadline
    }

    /// Runs `attempt` until it succeeds, fails in a way retrying cannot help, runs out of
    /// retries, or `deadline` comes. `on_retry` hears of every retry before its wait:
    /// the failure, the retry's number (1 for the second attempt) and the wait.
    pub(crate) async fn run<T, E, F, Fut>(
        &self,
        deadline: Instant,
        mut attempt: F,
        mut on_retry: impl FnMut(&E, u32, Duration),
    ) -> Result<T, E>
    where
        E: Retryable,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut retries = 0;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(E::timed_out());
            }
            let failure =
                match tokio::time::timeout(self.attempt_timeout.min(remaining), attempt()).await {
                    Ok(Ok(value)) => return Ok(value),
                    Ok(Err(failure)) => failure,
                    Err(_) => E::timed_out(),
                };
            if !failure.is_retryable() || retries >= self.max_retries {
                return Err(failure);
            }
            retries += 1;
            let wait = backoff(retries);
            if Instant::now() + wait >= deadline {
                return Err(failure);
            }
            on_retry(&failure, retries, wait);
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(status: u16) -> AttemptError {
        AttemptError::Reply(super::super::error::S3Failure::parse(status, ""))
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
        let started = std::time::Instant::now();
        let result: Result<(), AttemptError> = runtime().block_on(async {
            policy
                .run(
                    policy.deadline(),
                    || {
                        attempts += 1;
                        async { Err(failure(503)) }
                    },
                    |_, _, _| {},
                )
                .await
        });
        let elapsed = started.elapsed();
        assert!(
            matches!(&result, Err(AttemptError::Reply(r)) if r.status == 503),
            "{result:?}"
        );
        assert!(elapsed < Duration::from_millis(200), "{elapsed:?}");
        // Waits of 25-50, 50-100 and 100-200 ms: at most three fit in 200 ms.
        assert!((2..=4).contains(&attempts), "{attempts} attempts");
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
