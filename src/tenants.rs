//! Per-organization limits as the API applies them: each key's request rate (a token bucket per
//! key, in this process: one second's worth of burst, refilled at the organization's
//! `requests_per_second`), and the limits rows, cached for a moment so that a request costs no
//! extra query. An operator's change reaches every API process within [`CACHE_FOR`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::store::Db;
use crate::store::org_limits::{self, OrgLimits};

/// How long a process trusts the limits it read.
pub const CACHE_FOR: Duration = Duration::from_secs(2);

/// The rate buckets and the cached limits; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Limiter {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    limits: HashMap<String, (Instant, OrgLimits)>,
    buckets: HashMap<String, Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Limiter {
    /// The limits of `org_id`, from the cache when fresh.
    pub async fn limits(&self, db: &Db, org_id: &str) -> Result<OrgLimits, sqlx::Error> {
        if let Some((at, l)) = self.lock().limits.get(org_id)
            && at.elapsed() < CACHE_FOR
        {
            return Ok(l.clone());
        }
        let l = org_limits::get(db, org_id).await?;
        self.lock()
            .limits
            .insert(org_id.to_string(), (Instant::now(), l.clone()));
        Ok(l)
    }

    /// Forgets the cached limits of `org_id` (this process changed them).
    pub fn forget(&self, org_id: &str) {
        self.lock().limits.remove(org_id);
    }

    /// Takes one request from `key_id`'s bucket; `Err(wait)` when it is empty, with how long
    /// until a request would pass.
    pub async fn admit(&self, db: &Db, org_id: &str, key_id: &str) -> Result<(), AdmitError> {
        let Some(rate) = self.limits(db, org_id).await?.requests_per_second else {
            return Ok(());
        };
        self.take(key_id, rate, Instant::now())
            .map_err(AdmitError::Limited)
    }

    fn take(&self, key_id: &str, rate: f64, now: Instant) -> Result<(), Duration> {
        let burst = rate.max(1.0);
        let mut inner = self.lock();
        let b = inner.buckets.entry(key_id.to_string()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / rate))
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Why a request was not admitted.
#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    #[error("rate limited for {0:?}")]
    Limited(Duration),
    #[error(transparent)]
    Store(#[from] sqlx::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_a_seconds_burst_then_the_rate() {
        let l = Limiter::default();
        let t0 = Instant::now();
        // Rate 4/s: four at once, the fifth waits a quarter second.
        for _ in 0..4 {
            assert!(l.take("k", 4.0, t0).is_ok());
        }
        let wait = l.take("k", 4.0, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.25).abs() < 1e-9, "{wait:?}");
        assert!(l.take("k", 4.0, t0 + Duration::from_millis(250)).is_ok());
        assert!(l.take("k", 4.0, t0 + Duration::from_millis(260)).is_err());
        // Another key has its own bucket; a long pause refills no more than the burst.
        assert!(l.take("other", 4.0, t0).is_ok());
        let later = t0 + Duration::from_secs(60);
        for _ in 0..4 {
            assert!(l.take("k", 4.0, later).is_ok());
        }
        assert!(l.take("k", 4.0, later).is_err());
        // Under one request a second: bursts of one, waits of 1/rate.
        let wait = {
            assert!(l.take("slow", 0.5, t0).is_ok());
            l.take("slow", 0.5, t0).unwrap_err()
        };
        assert_eq!(wait, Duration::from_secs(2));
    }
}
