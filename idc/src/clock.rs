//! The clock, injected everywhere time matters, so tests run on a virtual clock.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::watch;

/// Wall-clock time at the store's resolution (milliseconds).
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;

    /// Resolves when `now() >= t` (or earlier if the clock cannot tell; callers re-check).
    fn sleep_until(
        &self,
        t: DateTime<Utc>,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

fn truncate_ms(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).expect("in range")
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        truncate_ms(Utc::now())
    }

    fn sleep_until(
        &self,
        t: DateTime<Utc>,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let wait = (t - Utc::now()).max(TimeDelta::zero());
        let wait = wait.to_std().unwrap_or_default() + std::time::Duration::from_millis(1);
        Box::pin(tokio::time::sleep(wait))
    }
}

/// A clock that moves only when told to; sleepers wake when it passes their time.
#[derive(Clone)]
pub struct ManualClock {
    now: Arc<Mutex<DateTime<Utc>>>,
    tick: watch::Sender<DateTime<Utc>>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> ManualClock {
        let start = truncate_ms(start);
        ManualClock {
            now: Arc::new(Mutex::new(start)),
            tick: watch::Sender::new(start),
        }
    }

    pub fn set(&self, t: DateTime<Utc>) {
        let t = truncate_ms(t);
        *self.now.lock().expect("clock lock") = t;
        self.tick.send_replace(t);
    }

    pub fn advance(&self, by: TimeDelta) {
        let t = self.now() + by;
        self.set(t);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().expect("clock lock")
    }

    fn sleep_until(
        &self,
        t: DateTime<Utc>,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let mut rx = self.tick.subscribe();
        Box::pin(async move {
            // The sender lives as long as the clock, which outlives this borrow.
            let _ = rx.wait_for(|now| *now >= t).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_clock_wakes_sleepers_when_it_passes_their_time() {
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let clock = ManualClock::new(t0);
        let c2 = clock.clone();
        let sleeper =
            tokio::spawn(async move { c2.sleep_until(t0 + TimeDelta::seconds(10)).await });
        tokio::task::yield_now().await;
        clock.advance(TimeDelta::seconds(5));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.advance(TimeDelta::seconds(5));
        tokio::time::timeout(std::time::Duration::from_secs(5), sleeper)
            .await
            .expect("woke")
            .unwrap();
    }
}
