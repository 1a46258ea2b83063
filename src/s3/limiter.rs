//! The store's request rate limiter, shared by every thread and call of one store.
//!
//! Without throttling it lets every request through at once. When the server throttles
//! (503 `SlowDown`, 429, …) and adaptive limiting is on, the store as a whole slows
//! down: the allowed rate drops to [`BETA`] times the rate it was sending at, then grows
//! back along a cubic curve (as in TCP CUBIC and the AWS SDKs' adaptive retry mode):
//! quickly to just below the rate that was throttled, slowly past it, then faster again
//! once the server keeps up. When the allowed rate reaches twice the throttled one
//! without a throttle, the limit is lifted. `max_requests_per_second` caps the rate
//! whatever happens.
//!
//! Requests are spaced evenly (one every `1 / rate` seconds, no bursts); a request
//! reserves its slot under a short lock and waits outside it. A request that could not
//! start before its call's deadline does not wait at all.
//!
//! Only one decrease counts per round: throttles of requests that were admitted before
//! the last decrease were sent at the old rate and say nothing new.

use std::collections::VecDeque;

use parking_lot::Mutex;
use tokio::time::{Duration, Instant};

/// The factor the rate is multiplied by on throttling.
pub(crate) const BETA: f64 = 0.7;
/// CUBIC's scaling constant, in requests per second per second cubed.
const CUBIC_C: f64 = 0.4;
/// The lowest rate adaptive limiting goes down to.
const MIN_RATE: f64 = 0.5;
/// Allowance for a request sent before a decrease to come back throttled.
const ROUND_TRIP: Duration = Duration::from_millis(50);
/// The sending rate is measured over the requests admitted in the last second…
const WINDOW: Duration = Duration::from_secs(1);
/// …at most this many of them (memory stays fixed at any rate)…
const WINDOW_REQUESTS: usize = 256;
/// …over at least this long (a burst counts as this long).
const MIN_SPAN: Duration = Duration::from_millis(100);

/// What the limiter was built with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Limits {
    /// A fixed cap in requests per second, if any.
    pub(crate) max_per_second: Option<f64>,
    /// Whether throttling slows the store down.
    pub(crate) adaptive: bool,
}

/// The rate limiter of one store.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    limits: Limits,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// The adaptive limit after throttling: `None` while there is none.
    cubic: Option<Cubic>,
    /// When the next request may start, when a rate applies.
    next_slot: Instant,
    /// When the latest requests were admitted, oldest first.
    recent: VecDeque<Instant>,
}

impl State {
    fn admitted(&mut self, at: Instant) {
        if self.recent.len() == WINDOW_REQUESTS {
            self.recent.pop_front();
        }
        self.recent.push_back(at);
    }

    /// Requests per second admitted over the last second.
    fn sending_rate(&self, now: Instant) -> f64 {
        let window: Vec<&Instant> = self
            .recent
            .iter()
            .filter(|t| now.saturating_duration_since(**t) <= WINDOW)
            .collect();
        let Some(first) = window.first() else {
            return 0.0;
        };
        let span = now.saturating_duration_since(**first).max(MIN_SPAN);
        window.len() as f64 / span.as_secs_f64()
    }
}

/// The cubic curve after a decrease: `rate(t) = w_max + C (t - k)^3`.
#[derive(Debug, Clone, Copy)]
struct Cubic {
    w_max: f64,
    k: f64,
    since: Instant,
    /// Requests sent before this were scheduled at the rate before the decrease (or
    /// were already on their way): their throttles say nothing new.
    round_ends: Instant,
}

impl Cubic {
    fn after_throttle(w_max: f64, now: Instant, round_ends: Instant) -> Cubic {
        Cubic {
            w_max,
            k: (w_max * (1.0 - BETA) / CUBIC_C).cbrt(),
            since: now,
            round_ends,
        }
    }

    fn rate(&self, now: Instant) -> f64 {
        let t = now.saturating_duration_since(self.since).as_secs_f64();
        (self.w_max + CUBIC_C * (t - self.k).powi(3)).max(MIN_RATE)
    }
}

/// When a request's slot came (when it was sent), for [`RateLimiter::throttled`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Admitted(Instant);

impl RateLimiter {
    pub(crate) fn new(limits: Limits) -> RateLimiter {
        let now = Instant::now();
        RateLimiter {
            limits,
            state: Mutex::new(State {
                cubic: None,
                next_slot: now,
                recent: VecDeque::with_capacity(WINDOW_REQUESTS),
            }),
        }
    }

    /// The rate that applies now, if any.
    fn rate(&self, state: &mut State, now: Instant) -> Option<f64> {
        let adaptive = match state.cubic {
            Some(c) => {
                let r = c.rate(now);
                if r >= 2.0 * c.w_max {
                    // The server has kept up with twice the throttled rate: no limit.
                    state.cubic = None;
                    None
                } else {
                    Some(r)
                }
            }
            None => None,
        };
        match (adaptive, self.limits.max_per_second) {
            (Some(a), Some(m)) => Some(a.min(m)),
            (a, m) => a.or(m),
        }
    }

    /// Waits for the request's slot. `Err(rate)` when the slot comes after `deadline`:
    /// the request must not be sent, and nothing was reserved.
    pub(crate) async fn admit(&self, deadline: Instant) -> Result<Admitted, f64> {
        let now = Instant::now();
        let slot = {
            let mut state = self.state.lock();
            match self.rate(&mut state, now) {
                None => {
                    state.admitted(now);
                    state.next_slot = now;
                    return Ok(Admitted(now));
                }
                Some(rate) => {
                    let slot = state.next_slot.max(now);
                    if slot > deadline {
                        return Err(rate);
                    }
                    state.next_slot = slot + Duration::from_secs_f64(1.0 / rate);
                    state.admitted(slot);
                    slot
                }
            }
        };
        if slot > now {
            tokio::time::sleep_until(slot).await;
        }
        Ok(Admitted(slot))
    }

    /// The server throttled a request admitted at `admitted`: slow the whole store down,
    /// once per round.
    pub(crate) fn throttled(&self, admitted: Admitted) {
        if !self.limits.adaptive {
            return;
        }
        let now = Instant::now();
        let mut state = self.state.lock();
        if state.cubic.is_some_and(|c| admitted.0 < c.round_ends) {
            return;
        }
        let current = self.rate(&mut state, now);
        // The rate the store was sending at: the limit if it was the bottleneck, else
        // what was measured.
        let sending = state.sending_rate(now);
        let w_max = match current {
            Some(limit) => limit.min(sending.max(MIN_RATE)),
            None => sending,
        }
        .max(MIN_RATE / BETA);
        // The round ends once the slots given out at the old rate have been used, plus
        // the time a request takes to come back throttled.
        let round_ends = state.next_slot.max(now) + ROUND_TRIP;
        state.cubic = Some(Cubic::after_throttle(w_max, now, round_ends));
        // Requests already given slots keep them; later ones follow at the new rate.
    }

    /// The limit now, in requests per second (`None`: none), for reports and tests.
    pub(crate) fn current(&self) -> Option<f64> {
        let mut state = self.state.lock();
        self.rate(&mut state, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
    }

    const ADAPTIVE: Limits = Limits {
        max_per_second: None,
        adaptive: true,
    };

    /// Sends `n` requests one after another, as fast as the limiter allows; returns
    /// how long they took.
    async fn send(limiter: &RateLimiter, n: usize) -> Duration {
        let start = Instant::now();
        let far = start + Duration::from_secs(3600);
        for _ in 0..n {
            limiter.admit(far).await.unwrap();
        }
        start.elapsed()
    }

    #[test]
    fn no_limit_until_the_server_throttles() {
        runtime().block_on(async {
            let limiter = RateLimiter::new(ADAPTIVE);
            assert_eq!(send(&limiter, 10_000).await, Duration::ZERO);
            assert_eq!(limiter.current(), None);
        });
    }

    #[test]
    fn a_throttle_drops_the_rate_to_beta_of_the_sending_rate_then_it_recovers() {
        runtime().block_on(async {
            let limiter = RateLimiter::new(ADAPTIVE);
            // 100 requests a second for two seconds.
            let far = Instant::now() + Duration::from_secs(3600);
            let mut last = None;
            for _ in 0..200 {
                last = Some(limiter.admit(far).await.unwrap());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            limiter.throttled(last.unwrap());
            let after = limiter.current().unwrap();
            assert!((65.0..=75.0).contains(&after), "{after}");
            // Requests are now spaced at the lower rate.
            let took = send(&limiter, 70).await;
            assert!(took >= Duration::from_millis(800), "{took:?}");
            // A throttle of a request admitted before the decrease changes nothing.
            limiter.throttled(last.unwrap());
            let again = limiter.current().unwrap();
            assert!(again >= after, "{again} < {after}");
            // Back near the throttled rate after k seconds, unlimited some seconds later.
            tokio::time::sleep(Duration::from_secs(5)).await;
            let near = limiter.current().unwrap();
            assert!((90.0..=110.0).contains(&near), "{near}");
            tokio::time::sleep(Duration::from_secs(30)).await;
            assert_eq!(limiter.current(), None);
        });
    }

    #[test]
    fn constant_throttling_holds_the_rate_near_the_floor() {
        runtime().block_on(async {
            let limiter = RateLimiter::new(ADAPTIVE);
            let far = Instant::now() + Duration::from_secs(3600);
            for _ in 0..100 {
                let admitted = limiter.admit(far).await.unwrap();
                limiter.throttled(admitted);
            }
            // Each wait for a slot lets the curve grow back a little: it settles at a
            // few requests a second.
            let rate = limiter.current().unwrap();
            assert!(rate <= 3.0, "{rate}");
            assert!(rate >= MIN_RATE, "{rate}");
        });
    }

    #[test]
    fn a_fixed_cap_spaces_requests_and_adaptive_off_ignores_throttles() {
        runtime().block_on(async {
            let limiter = RateLimiter::new(Limits {
                max_per_second: Some(50.0),
                adaptive: false,
            });
            let took = send(&limiter, 101).await;
            assert_eq!(took, Duration::from_secs(2));
            let far = Instant::now() + Duration::from_secs(3600);
            let admitted = limiter.admit(far).await.unwrap();
            limiter.throttled(admitted);
            assert_eq!(limiter.current(), Some(50.0));
        });
    }

    #[test]
    fn a_slot_past_the_deadline_is_refused_without_waiting() {
        runtime().block_on(async {
            let limiter = RateLimiter::new(Limits {
                max_per_second: Some(1.0),
                adaptive: true,
            });
            let soon = Instant::now() + Duration::from_millis(500);
            limiter.admit(soon).await.unwrap();
            let start = Instant::now();
            assert_eq!(limiter.admit(soon).await.unwrap_err(), 1.0);
            assert_eq!(start.elapsed(), Duration::ZERO);
            // Nothing was reserved: the next slot is still one second after the first.
            let far = Instant::now() + Duration::from_secs(10);
            limiter.admit(far).await.unwrap();
            assert_eq!(start.elapsed(), Duration::from_secs(1));
        });
    }
}
