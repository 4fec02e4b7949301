//! Basic authentication against the web configuration's bcrypt hashes, and the file's
//! `rate_limit`.
//!
//! A bcrypt check costs tens of milliseconds of CPU by design, and Prometheus sends the same
//! credentials every scrape, so each outcome is cached — successes and failures apart, so a
//! stream of wrong passwords cannot push the right one out. The cache key is an HMAC, under a
//! key drawn at start and never stored, of the user, the hash and the password: no password
//! is kept in clear, and the key changes with the hash, so a changed password in the file
//! takes effect at once. At most one bcrypt runs at a time (off the async workers), and a
//! check waits at most [`BCRYPT_WAIT`] for its turn: a flood of distinct wrong passwords costs
//! at most one core and gets 429, while a scraper whose credentials are cached is answered
//! without any bcrypt.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use http::HeaderValue;
use ring::hmac;
use tokio::sync::Semaphore;

use super::webconfig::RateLimit;

/// How long a check waits for the bcrypt slot before the answer is 429.
pub const BCRYPT_WAIT: Duration = Duration::from_secs(1);

/// A fixed bcrypt hash (cost 10) checked for unknown users, so an unknown user costs what a
/// known one does and timing does not tell which users exist.
const UNKNOWN_USER_HASH: &str = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// No, or wrong, credentials: 401.
    Denied,
    /// The bcrypt slot stayed busy: 429, try again.
    Busy,
}

pub struct Authenticator {
    key: hmac::Key,
    allowed: moka::sync::Cache<[u8; 32], ()>,
    denied: moka::sync::Cache<[u8; 32], ()>,
    bcrypt: Semaphore,
}

impl Default for Authenticator {
    fn default() -> Self {
        Self::new()
    }
}

impl Authenticator {
    pub fn new() -> Self {
        let rng = ring::rand::SystemRandom::new();
        // Generating 32 random bytes only fails without a system random source; then a key
        // from the clock still keeps the cache keys unlike the passwords.
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng).unwrap_or_else(|_| {
            let seed = format!("{:?}{}", Instant::now(), std::process::id());
            hmac::Key::new(hmac::HMAC_SHA256, seed.as_bytes())
        });
        Self {
            key,
            allowed: moka::sync::Cache::builder()
                .max_capacity(1024)
                .time_to_idle(Duration::from_secs(3600))
                .build(),
            denied: moka::sync::Cache::builder()
                .max_capacity(16 * 1024)
                .time_to_live(Duration::from_secs(3600))
                .build(),
            bcrypt: Semaphore::new(1),
        }
    }

    /// Checks an `Authorization` header against `users` (user → bcrypt hash).
    pub async fn check(&self, users: &BTreeMap<String, String>, authorization: Option<&HeaderValue>) -> Verdict {
        let Some((user, password)) = authorization.and_then(basic_credentials) else {
            return Verdict::Denied;
        };
        let (hash, known) = match users.get(&user) {
            Some(hash) => (hash.clone(), true),
            None => (UNKNOWN_USER_HASH.to_owned(), false),
        };
        let key = self.cache_key(&user, &hash, &password);
        if self.allowed.contains_key(&key) {
            return if known { Verdict::Allowed } else { Verdict::Denied };
        }
        if self.denied.contains_key(&key) {
            return Verdict::Denied;
        }
        let Ok(Ok(_permit)) = tokio::time::timeout(BCRYPT_WAIT, self.bcrypt.acquire()).await else {
            return Verdict::Busy;
        };
        let matches = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
            .await
            .unwrap_or(false);
        if matches && known {
            self.allowed.insert(key, ());
            Verdict::Allowed
        } else {
            self.denied.insert(key, ());
            Verdict::Denied
        }
    }

    fn cache_key(&self, user: &str, hash: &str, password: &str) -> [u8; 32] {
        let mut context = hmac::Context::with_key(&self.key);
        // Lengths first, so no two (user, hash, password) triples give the same bytes.
        for part in [user, hash, password] {
            context.update(&(part.len() as u64).to_le_bytes());
            context.update(part.as_bytes());
        }
        let mut key = [0; 32];
        key.copy_from_slice(context.sign().as_ref());
        key
    }
}

/// `Basic base64(user:password)`, as RFC 7617 (the scheme's name in any case).
fn basic_credentials(value: &HeaderValue) -> Option<(String, String)> {
    let text = value.to_str().ok()?;
    let (scheme, encoded) = text.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// The file's `rate_limit`: a token bucket over every request, as Go's `rate.Limiter`.
pub struct RateLimiter {
    limit: RateLimit,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            state: Mutex::new((f64::from(limit.burst), Instant::now())),
        }
    }

    /// Takes a token if one is there.
    pub fn allow(&self) -> bool {
        let Ok(mut state) = self.state.lock() else {
            return true;
        };
        let (tokens, last) = &mut *state;
        let now = Instant::now();
        let refill = now.duration_since(*last).as_secs_f64() / self.limit.interval.as_secs_f64();
        *tokens = (*tokens + refill).min(f64::from(self.limit.burst));
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user: &str, password: &str) -> HeaderValue {
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        HeaderValue::from_str(&format!("Basic {encoded}")).expect("header")
    }

    #[test]
    fn credentials_are_decoded() {
        assert_eq!(basic_credentials(&header("a", "b:c")), Some(("a".into(), "b:c".into())));
        for bad in ["Bearer x", "Basic !!!", "Basic", ""] {
            assert_eq!(basic_credentials(&HeaderValue::from_static(bad)), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn outcomes_are_cached_and_follow_the_hash() {
        let auth = Authenticator::new();
        let mut users = BTreeMap::from([("prom".to_owned(), bcrypt::hash("right", 4).expect("hash"))]);
        assert_eq!(auth.check(&users, None).await, Verdict::Denied);
        assert_eq!(
            auth.check(&users, Some(&header("prom", "right"))).await,
            Verdict::Allowed
        );
        assert_eq!(
            auth.check(&users, Some(&header("prom", "wrong"))).await,
            Verdict::Denied
        );
        assert_eq!(
            auth.check(&users, Some(&header("nobody", "right"))).await,
            Verdict::Denied
        );
        assert_eq!(auth.allowed.iter().count(), 1);
        assert_eq!(auth.denied.iter().count(), 2);
        // Cached: the same answers again without a new entry.
        assert_eq!(
            auth.check(&users, Some(&header("prom", "right"))).await,
            Verdict::Allowed
        );
        assert_eq!(
            auth.check(&users, Some(&header("prom", "wrong"))).await,
            Verdict::Denied
        );
        assert_eq!(auth.denied.iter().count(), 2);
        // A new hash in the file: the old password no longer passes.
        users.insert("prom".into(), bcrypt::hash("new", 4).expect("hash"));
        assert_eq!(
            auth.check(&users, Some(&header("prom", "right"))).await,
            Verdict::Denied
        );
        assert_eq!(auth.check(&users, Some(&header("prom", "new"))).await, Verdict::Allowed);
    }

    #[test]
    fn the_rate_limiter_allows_its_burst() {
        let limiter = RateLimiter::new(RateLimit {
            interval: Duration::from_secs(3600),
            burst: 3,
        });
        let allowed = (0..10).filter(|_| limiter.allow()).count();
        assert_eq!(allowed, 3);
    }
}
