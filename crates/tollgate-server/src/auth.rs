//! Who is calling: the admin token, a user's gateway key or a service key.
//!
//! A presented key's checksum is checked before any lookup; verified keys
//! are cached in memory (bounded, with a TTL so that a revocation made by
//! another instance is seen within it); a revocation made here clears the
//! cache at once. Failed attempts are counted per client IP and, past a
//! limit, refused with 429 until the window ends. Nothing here logs or
//! returns the presented secret.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;
use tollgate_domain::model::{KeyKind, KeyRecord, User, UserStatus};
use tollgate_domain::{GatewayKey, KeyHash, KeyId, Scope, Timestamp};

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// A verified key and, for a user's key, its owner as of verification.
#[derive(Clone, Debug)]
pub struct AuthedKey {
    pub key: KeyRecord,
    pub user: Option<User>,
}

/// The authenticated caller of a request.
#[derive(Clone, Debug)]
pub enum Principal {
    Admin,
    Key(Arc<AuthedKey>),
    /// No credential, in anonymous demo mode: metered by client address.
    Anonymous(IpAddr),
}

impl Principal {
    /// The key, for routes that only keys may call.
    pub fn key(&self) -> Option<&AuthedKey> {
        match self {
            Principal::Key(k) => Some(k),
            Principal::Admin | Principal::Anonymous(_) => None,
        }
    }

    /// The owner of a user's key, or 403 for the admin token and service keys.
    pub fn user_key(&self) -> ApiResult<(&KeyRecord, &User)> {
        match self.key() {
            Some(AuthedKey { key, user: Some(user) }) => Ok((key, user)),
            _ => Err(ApiError::Forbidden("this route is for a user's own key".into())),
        }
    }

    pub fn require_scope(&self, scope: Scope) -> ApiResult<()> {
        match self {
            Principal::Admin => Ok(()),
            Principal::Key(k) if k.key.scopes.contains(scope) => Ok(()),
            Principal::Anonymous(_) => Err(ApiError::Unauthorized("this route needs a key".into())),
            Principal::Key(_) => {
                Err(ApiError::Forbidden(format!("this key lacks the scope {scope:?}", scope = scope.as_str())))
            }
        }
    }
}

/// The credential a request presents, from the first place that has one:
/// `Authorization: Bearer`, `X-API-Key` (any case), `x-goog-api-key`, `?key=`.
pub fn presented_credential<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> Option<&'a str> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty());
    header("authorization")
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .or_else(|| header("x-api-key"))
        .or_else(|| header("x-goog-api-key"))
        .or_else(|| query?.split('&').find_map(|pair| pair.strip_prefix("key=")).filter(|v| !v.is_empty()))
}

/// The client's IP: the socket peer, or the first `X-Forwarded-For` hop when
/// the operator says a trusted proxy sets it.
pub fn client_ip(parts: &Parts, trust_forwarded_for: bool) -> Option<IpAddr> {
    if trust_forwarded_for
        && let Some(ip) = parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse().ok())
    {
        return Some(ip);
    }
    parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())
}

/// Verified keys by hash. Bounded: when full, expired entries go first,
/// then everything (a cache miss costs one indexed lookup).
pub struct KeyCache {
    entries: Mutex<HashMap<KeyHash, (Instant, Arc<AuthedKey>)>>,
    ttl: Duration,
    capacity: usize,
}

impl KeyCache {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        KeyCache { entries: Mutex::new(HashMap::new()), ttl, capacity }
    }

    fn get(&self, hash: &KeyHash) -> Option<Arc<AuthedKey>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.get(hash).filter(|(at, _)| at.elapsed() < self.ttl).map(|(_, k)| k.clone())
    }

    fn insert(&self, hash: KeyHash, key: Arc<AuthedKey>) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.capacity {
            entries.retain(|_, (at, _)| at.elapsed() < self.ttl);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(hash, (Instant::now(), key));
    }

    /// Forgets every verified key: called after any change that could make
    /// one of them invalid (revocation, rotation, suspension, deletion).
    pub fn invalidate_all(&self) {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// Failed authentications per client IP, in fixed windows.
pub struct FailureLimiter {
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    limit: u32,
    window: Duration,
}

const MAX_TRACKED_IPS: usize = 100_000;

impl FailureLimiter {
    pub fn new(limit: u32, window: Duration) -> Self {
        FailureLimiter { windows: Mutex::new(HashMap::new()), limit, window }
    }

    /// `Err` with the seconds to wait when `ip` has failed too often.
    fn check(&self, ip: IpAddr) -> Result<(), u64> {
        let windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        match windows.get(&ip) {
            Some((start, failures)) if *failures >= self.limit && start.elapsed() < self.window => {
                Err((self.window - start.elapsed()).as_secs().max(1))
            }
            _ => Ok(()),
        }
    }

    fn record_failure(&self, ip: IpAddr) {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if windows.len() >= MAX_TRACKED_IPS {
            windows.retain(|_, (start, _)| start.elapsed() < self.window);
        }
        let entry = windows.entry(ip).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= self.window {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }
}

/// Last-used times gathered in memory and written to the store in batches,
/// so that a request costs no database write.
#[derive(Default)]
pub struct LastUsed(Mutex<HashMap<KeyId, Timestamp>>);

impl LastUsed {
    fn touch(&self, id: &KeyId, at: Timestamp) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match map.get_mut(id) {
            Some(t) => *t = at.max(*t),
            None => {
                map.insert(id.clone(), at);
            }
        }
    }

    /// The newest of the stored and the pending time.
    pub fn current(&self, key: &KeyRecord) -> Option<Timestamp> {
        let pending = self.0.lock().unwrap_or_else(|p| p.into_inner()).get(&key.id).copied();
        key.last_used_at.max(pending)
    }

    pub fn take(&self) -> Vec<(KeyId, Timestamp)> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner())).into_iter().collect()
    }

    /// Puts back times whose write failed, unless newer ones arrived.
    pub fn restore(&self, uses: Vec<(KeyId, Timestamp)>) {
        for (id, at) in uses {
            self.touch(&id, at);
        }
    }
}

fn matches_admin(state: &AppState, presented: &KeyHash) -> bool {
    bool::from(presented.as_str().as_bytes().ct_eq(state.admin_token_hash.as_str().as_bytes()))
}

/// Verifies the request's credential.
pub async fn authenticate(state: &AppState, parts: &Parts) -> ApiResult<Principal> {
    let ip = client_ip(parts, state.config.trust_forwarded_for);
    refuse_repeated_failures(state, ip)?;
    let credential = presented_credential(&parts.headers, parts.uri.query()).ok_or_else(|| {
        ApiError::Unauthorized(
            "no credential: send `Authorization: Bearer <key>` (or X-API-Key, x-goog-api-key, ?key=)".into(),
        )
    })?;
    verify_credential(state, ip, credential).await
}

/// 429 when `ip` has failed to authenticate too often in this window.
fn refuse_repeated_failures(state: &AppState, ip: Option<IpAddr>) -> ApiResult<()> {
    match ip.map(|ip| state.failures.check(ip)) {
        Some(Err(wait)) => Err(ApiError::RateLimited {
            message: "too many failed authentication attempts from this address; try again later".into(),
            retry_after_seconds: wait,
            details: None,
        }),
        _ => Ok(()),
    }
}

/// Verifies a credential typed into a sign-in form (the admin token or a
/// gateway key), with the same checks and failure limit as a request's.
pub async fn verify_signin(state: &AppState, ip: Option<IpAddr>, credential: &str) -> ApiResult<Principal> {
    refuse_repeated_failures(state, ip)?;
    verify_credential(state, ip, credential.trim()).await
}

async fn verify_credential(state: &AppState, ip: Option<IpAddr>, credential: &str) -> ApiResult<Principal> {
    // A key's hash is its credential's: hashed once, for both questions.
    let hash = KeyHash::of(credential);
    if matches_admin(state, &hash) {
        return Ok(Principal::Admin);
    }
    let failed = |reason: &'static str, message: String| {
        if let Some(ip) = ip {
            state.failures.record_failure(ip);
        }
        metrics::counter!("tollgate_auth_failures_total", "reason" => reason).increment(1);
        ApiError::Unauthorized(message)
    };
    GatewayKey::parse(credential).map_err(|e| failed("malformed", e.to_string()))?;
    let authed = match state.key_cache.get(&hash) {
        Some(hit) => hit,
        None => {
            let found = state.store.key_for_auth(&hash).await?;
            let found = found.ok_or_else(|| failed("unknown", "this key is not known".into()))?;
            let authed = Arc::new(AuthedKey { key: found.key, user: found.user });
            state.key_cache.insert(hash, authed.clone());
            authed
        }
    };
    let now = Timestamp::now();
    if let Some(refusal) = authed.key.refusal(now) {
        return Err(ApiError::Unauthorized(refusal.into()));
    }
    if let Some(user) = &authed.user
        && user.status == UserStatus::Suspended
    {
        return Err(ApiError::Forbidden(format!("user {:?} is suspended", user.id.as_str())));
    }
    debug_assert!(authed.key.kind == KeyKind::Service || authed.user.is_some());
    state.last_used.touch(&authed.key.id, now);
    Ok(Principal::Key(authed))
}

/// Middleware: any valid credential (or none, in anonymous demo mode);
/// the principal goes into the request.
pub async fn require_principal(State(state): State<AppState>, req: Request, next: Next) -> Result<Response, ApiError> {
    let (mut parts, body) = req.into_parts();
    let anonymous =
        state.config.anonymous.is_some() && presented_credential(&parts.headers, parts.uri.query()).is_none();
    let principal = match client_ip(&parts, state.config.trust_forwarded_for) {
        Some(ip) if anonymous => Principal::Anonymous(ip),
        _ => authenticate(&state, &parts).await?,
    };
    parts.extensions.insert(principal);
    Ok(next.run(Request::from_parts(parts, body)).await)
}

/// Middleware: the admin token only. A valid key is told it is not enough.
pub async fn require_admin(State(state): State<AppState>, req: Request, next: Next) -> Result<Response, ApiError> {
    let (mut parts, body) = req.into_parts();
    match authenticate(&state, &parts).await? {
        Principal::Admin => {
            parts.extensions.insert(Principal::Admin);
            Ok(next.run(Request::from_parts(parts, body)).await)
        }
        Principal::Key(_) | Principal::Anonymous(_) => {
            Err(ApiError::Forbidden("this route needs the admin token, not a gateway key".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn credentials_are_found_in_every_documented_place() {
        let check = |name: &str, value: &str, query: Option<&str>, expected: Option<&str>| {
            let mut headers = HeaderMap::new();
            if !name.is_empty() {
                headers.insert(
                    axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_str(value).unwrap(),
                );
            }
            assert_eq!(presented_credential(&headers, query), expected, "{name} {query:?}");
        };
        check("authorization", "Bearer tg_a", None, Some("tg_a"));
        check("authorization", "bearer  tg_a ", None, Some("tg_a"));
        check("authorization", "Basic xyz", None, None);
        check("x-api-key", "tg_b", None, Some("tg_b"));
        check("X-API-Key", "tg_b", None, Some("tg_b"));
        check("x-goog-api-key", "tg_c", None, Some("tg_c"));
        check("", "", Some("alt=sse&key=tg_d"), Some("tg_d"));
        check("", "", Some("monkey=tg_d"), None);
        check("", "", None, None);
    }

    #[test]
    fn failures_past_the_limit_are_refused_until_the_window_ends() {
        let limiter = FailureLimiter::new(3, Duration::from_secs(60));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..3 {
            assert!(limiter.check(ip).is_ok());
            limiter.record_failure(ip);
        }
        let wait = limiter.check(ip).unwrap_err();
        assert!((1..=60).contains(&wait));
        assert!(limiter.check("10.0.0.2".parse().unwrap()).is_ok());
    }

    #[test]
    fn the_cache_stays_within_its_capacity() {
        let cache = KeyCache::new(Duration::from_secs(60), 2);
        let key = || {
            let g = GatewayKey::generate();
            let record = KeyRecord {
                id: KeyId::generate(),
                kind: KeyKind::Service,
                user_id: None,
                name: "n".into(),
                prefix: g.display_prefix(),
                last4: g.last4(),
                scopes: Default::default(),
                created_at: Timestamp::now(),
                expires_at: None,
                revoked_at: None,
                last_used_at: None,
            };
            (g.hash(), Arc::new(AuthedKey { key: record, user: None }))
        };
        for _ in 0..5 {
            let (hash, k) = key();
            cache.insert(hash.clone(), k);
            assert!(cache.get(&hash).is_some());
            assert!(cache.entries.lock().unwrap().len() <= 2);
        }
    }
}
