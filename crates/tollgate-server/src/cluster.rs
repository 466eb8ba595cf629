//! What several instances share through Redis (`TOLLGATE_REDIS_URL`): live
//! counters and reservation holds ([`RedisCounters`]), the per-minute rate
//! windows, and a channel on which a change to users, plans or keys is
//! announced, so that every instance forgets its cached verifications at
//! once instead of within the cache TTL.
//!
//! Every decision that must be exact across instances (a reservation against
//! `used + reserved`, a rate window) is one Lua script, which Redis runs
//! atomically. Committed usage stays in the store, which remains the truth:
//! a counter's `used` in Redis is a copy loaded from the store, kept up to
//! date by each instance adding what it commits, and dropped after
//! [`USED_TTL_MS`] so that it is read again (which bounds the drift a crash
//! between a commit and its addition could leave). A load is fenced: each
//! addition bumps the counter's generation, and a value read from the store
//! while the generation moved is read again rather than set, since it may
//! miss that addition. What remains errs on the safe side: a value read just
//! after another instance's commit and set just before its addition counts
//! that usage twice until the counter is read again.
//!
//! Counts are compared in Lua, whose numbers are doubles: exact up to 2^53.

use std::sync::Arc;

use anyhow::Context;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use redis::aio::ConnectionManager;
use redis::{Script, cmd};
use tollgate_domain::quota::{Ask, Count, CounterKey, Refusal};

use crate::metering::{CounterResult, CounterStore, NotLoaded, Parts};
use crate::state::AppState;

/// How long a loaded counter's committed value is trusted before it is read
/// from the store again.
pub const USED_TTL_MS: i64 = 60_000;
/// Holds older than this past their expiry are gone even if no instance
/// expired them (a hold's key outlives its expiry by this much).
const HOLD_GRACE_MS: i64 = 60_000;
const WINDOW_MS: i64 = 60_000;

/// A connection to the shared Redis and the prefix of every key Tollgate
/// writes there.
pub struct Cluster {
    client: redis::Client,
    conn: ConnectionManager,
    prefix: String,
}

impl Cluster {
    /// Connects and checks that Redis answers; the URL (which may hold a
    /// password) is never repeated in the error.
    pub async fn connect(url: &str, prefix: &str) -> anyhow::Result<Arc<Cluster>> {
        let client = redis::Client::open(url).context("TOLLGATE_REDIS_URL is not a Redis URL")?;
        let conn = tokio::time::timeout(std::time::Duration::from_secs(10), client.get_connection_manager())
            .await
            .map_err(|_| anyhow::anyhow!("Redis did not answer within 10 s"))?
            .context("failed to connect to Redis (TOLLGATE_REDIS_URL)")?;
        let mut ping = conn.clone();
        let _: String = cmd("PING").query_async(&mut ping).await.context("Redis does not answer PING")?;
        Ok(Arc::new(Cluster { client, conn, prefix: prefix.to_owned() }))
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    fn channel(&self) -> String {
        format!("{}changes", self.prefix)
    }

    /// Tells every instance (this one included) that users, plans or keys
    /// changed. A failure is logged: the others then catch up within their
    /// cache TTL.
    pub async fn announce(&self) {
        let mut conn = self.conn();
        let sent: redis::RedisResult<i64> =
            cmd("PUBLISH").arg(self.channel()).arg("changed").query_async(&mut conn).await;
        if let Err(e) = sent {
            tracing::warn!(error = %e, "failed to announce a change to the other instances");
        }
    }

    /// Listens for announcements and forgets cached verifications on each;
    /// reconnects when the subscription breaks.
    pub async fn listen(self: Arc<Self>, state: AppState) {
        loop {
            match self.client.get_async_pubsub().await {
                Ok(mut pubsub) => match pubsub.subscribe(self.channel()).await {
                    Ok(()) => {
                        // Whatever was missed while not subscribed is
                        // forgotten now too.
                        state.forget_cached();
                        let mut messages = pubsub.on_message();
                        while messages.next().await.is_some() {
                            state.forget_cached();
                        }
                        tracing::warn!("the Redis subscription ended; subscribing again");
                    }
                    Err(e) => tracing::warn!(error = %e, "failed to subscribe to Redis announcements"),
                },
                Err(e) => tracing::warn!(error = %e, "failed to connect to Redis for announcements"),
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }

    fn used_key(&self, key: &CounterKey) -> String {
        // The meter's length first: meters and user ids may both hold ':'.
        format!("{}u:{}:{}:{}:{}", self.prefix, key.period_start, key.meter.len(), key.meter, key.user)
    }

    fn generation_key(&self, key: &CounterKey) -> String {
        format!("{}g:{}:{}:{}:{}", self.prefix, key.period_start, key.meter.len(), key.meter, key.user)
    }

    fn reserved_key(&self, key: &CounterKey) -> String {
        format!("{}r:{}:{}:{}:{}", self.prefix, key.period_start, key.meter.len(), key.meter, key.user)
    }

    fn hold_key(&self, id: &str) -> String {
        format!("{}h:{id}", self.prefix)
    }

    fn holds_key(&self) -> String {
        format!("{}holds", self.prefix)
    }

    fn window_key(&self, who: &str) -> String {
        format!("{}w:{who}", self.prefix)
    }

    /// Takes `cost` from `who`'s allowance of `per_minute` (GCRA, on
    /// Redis's clock); `Err` holds the milliseconds to wait.
    pub async fn take(&self, who: &str, per_minute: i64, cost: i64) -> anyhow::Result<Result<(), u64>> {
        let wait: i64 = WINDOW_TAKE
            .key(self.window_key(who))
            .arg(per_minute.max(1))
            .arg(cost)
            .arg(WINDOW_MS)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(if wait < 0 { Ok(()) } else { Err(wait as u64) })
    }

    /// Gives back `cost` taken earlier, never past an empty window.
    pub async fn give_back(&self, who: &str, per_minute: i64, cost: i64) -> anyhow::Result<()> {
        let _: i64 = WINDOW_GIVE_BACK
            .key(self.window_key(who))
            .arg(per_minute.max(1))
            .arg(cost)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(())
    }

    /// What is left of `who`'s allowance now, and the milliseconds until all
    /// of it is back.
    pub async fn peek(&self, who: &str, per_minute: i64) -> anyhow::Result<(i64, u64)> {
        let (remaining, busy): (i64, i64) = WINDOW_PEEK
            .key(self.window_key(who))
            .arg(per_minute.max(1))
            .arg(WINDOW_MS)
            .invoke_async(&mut self.conn())
            .await?;
        Ok((remaining, busy.max(0) as u64))
    }
}

/// GCRA on Redis's clock. ARGV: per minute, cost, window (ms). Returns -1
/// when taken, else the milliseconds to wait.
static WINDOW_TAKE: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[3]) / tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new = tat + tonumber(ARGV[2]) * interval
if new - now > tonumber(ARGV[3]) then
  return math.ceil(new - now - tonumber(ARGV[3]))
end
redis.call('SET', KEYS[1], tostring(new), 'PX', math.ceil(new - now) + 1000)
return -1
",
    )
});

static WINDOW_GIVE_BACK: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat <= now then return 0 end
local new = tat - tonumber(ARGV[2]) * (60000 / tonumber(ARGV[1]))
if new < now then new = now end
redis.call('SET', KEYS[1], tostring(new), 'PX', math.ceil(new - now) + 1000)
return 0
",
    )
});

/// Returns {remaining, busy ms}.
static WINDOW_PEEK: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local per = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local busy = tat - now
local remaining = math.floor((window - busy) / (window / per))
if remaining < 0 then remaining = 0 end
if remaining > per then remaining = per end
return {remaining, math.ceil(busy)}
",
    )
});

/// Holds every ask or none. KEYS: used and reserved key of each ask, then the
/// hold's key and the set of holds. ARGV: the number of asks, then amount
/// and limit (-1: unlimited) of each, then expiry (ms), id, the hold's
/// parts (JSON) and the hold key's lifetime (ms). Returns {-1} when held,
/// {-2, index} when a counter is not loaded, else {index, used, reserved,
/// limit} of the first counter that would overflow.
static RESERVE: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(
        r"
local n = tonumber(ARGV[1])
for i = 1, n do
  local used = redis.call('GET', KEYS[2 * i - 1])
  if not used then return {-2, i - 1} end
  used = tonumber(used)
  local reserved = tonumber(redis.call('GET', KEYS[2 * i]) or '0')
  local amount = tonumber(ARGV[2 * i])
  local limit = tonumber(ARGV[2 * i + 1])
  if limit >= 0 and used + reserved + amount > limit then
    return {i - 1, used, reserved, limit}
  end
end
for i = 1, n do
  redis.call('INCRBY', KEYS[2 * i], ARGV[2 * i])
end
redis.call('SET', KEYS[2 * n + 1], ARGV[2 * n + 4], 'PX', ARGV[2 * n + 5])
redis.call('ZADD', KEYS[2 * n + 2], ARGV[2 * n + 2], ARGV[2 * n + 3])
return {-1}
",
    )
});

/// Ends a hold: what it reserved is given back. KEYS: the hold, the set of
/// holds. ARGV: the id. Returns whether the hold existed.
static RELEASE: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(
        r"
local parts = redis.call('GET', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if not parts then return 0 end
for _, p in ipairs(cjson.decode(parts)) do
  local left = redis.call('DECRBY', p[1], p[2])
  if left <= 0 then redis.call('DEL', p[1]) end
end
redis.call('DEL', KEYS[1])
return 1
",
    )
});

/// Keeps a live hold longer. KEYS: the hold, the set of holds. ARGV: the
/// id, its new expiry (ms) and the hold key's new lifetime (ms). Returns
/// whether the hold existed.
static PROLONG: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local expires = redis.call('ZSCORE', KEYS[2], ARGV[1])
if expires and tonumber(expires) >= tonumber(ARGV[2]) then return 1 end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
",
    )
});

/// Adds committed usage to the counters that are loaded. KEYS: used keys.
/// ARGV: the amounts.
/// Adds committed usage: KEYS are (used, generation) pairs, ARGV the
/// amounts then the generation's TTL. A counter not loaded is left to the
/// next load, but its generation moves, so that a load under way reads again.
static ADD_USED: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(
        r"
local n = #KEYS / 2
for i = 1, n do
  local used, gen = KEYS[2 * i - 1], KEYS[2 * i]
  redis.call('INCR', gen)
  redis.call('PEXPIRE', gen, ARGV[n + 1])
  if redis.call('EXISTS', used) == 1 then redis.call('INCRBY', used, ARGV[i]) end
end
return 0
",
    )
});

/// Sets a counter's committed value read from the store, unless it is
/// loaded already (1) or the generation moved since the read began (0).
static LOAD: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 1 end
if tonumber(redis.call('GET', KEYS[2]) or '0') ~= tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
",
    )
});

/// How long a counter's generation outlives its last addition: far longer
/// than a load takes.
const GENERATION_TTL_MS: i64 = 60 * 60 * 1000;

/// A hold as kept in Redis: `[reserved key, amount, user, meter, period start]`
/// per part.
type HoldParts = Vec<(String, i64, String, String, i64)>;

/// Live counters and holds in Redis, shared by every instance.
pub struct RedisCounters(pub Arc<Cluster>);

impl RedisCounters {
    async fn release_one(&self, id: &str) -> anyhow::Result<bool> {
        let c = &self.0;
        let existed: i64 = RELEASE.key(c.hold_key(id)).key(c.holds_key()).arg(id).invoke_async(&mut c.conn()).await?;
        Ok(existed == 1)
    }
}

impl CounterStore for RedisCounters {
    fn missing<'a>(&'a self, keys: &'a [CounterKey]) -> BoxFuture<'a, CounterResult<Vec<CounterKey>>> {
        Box::pin(async move {
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            let mut pipe = redis::pipe();
            for key in keys {
                pipe.cmd("EXISTS").arg(self.0.used_key(key));
            }
            let found: Vec<i64> = pipe.query_async(&mut self.0.conn()).await?;
            Ok(keys.iter().zip(found).filter(|(_, f)| *f == 0).map(|(k, _)| k.clone()).collect())
        })
    }

    fn fence<'a>(&'a self, key: &'a CounterKey) -> BoxFuture<'a, CounterResult<u64>> {
        Box::pin(async move {
            let generation: Option<u64> =
                cmd("GET").arg(self.0.generation_key(key)).query_async(&mut self.0.conn()).await?;
            Ok(generation.unwrap_or(0))
        })
    }

    fn load(&self, key: CounterKey, used: i64, fence: u64) -> BoxFuture<'_, CounterResult<bool>> {
        Box::pin(async move {
            let c = &self.0;
            let done: i64 = LOAD
                .key(c.used_key(&key))
                .key(c.generation_key(&key))
                .arg(used)
                .arg(fence)
                .arg(USED_TTL_MS)
                .invoke_async(&mut c.conn())
                .await?;
            Ok(done == 1)
        })
    }

    fn count<'a>(&'a self, key: &'a CounterKey) -> BoxFuture<'a, CounterResult<Count>> {
        Box::pin(async move {
            let (used, reserved): (Option<i64>, Option<i64>) = cmd("MGET")
                .arg(self.0.used_key(key))
                .arg(self.0.reserved_key(key))
                .query_async(&mut self.0.conn())
                .await?;
            Ok(Count { used: used.unwrap_or(0), reserved: reserved.unwrap_or(0) })
        })
    }

    fn reserve<'a>(
        &'a self,
        id: &'a str,
        asks: &'a [Ask],
        now: i64,
        ttl_ms: i64,
    ) -> BoxFuture<'a, CounterResult<Result<(), Refusal>>> {
        Box::pin(async move {
            let c = &self.0;
            let parts: HoldParts = asks
                .iter()
                .map(|a| {
                    (c.reserved_key(&a.key), a.amount, a.key.user.clone(), a.key.meter.clone(), a.key.period_start)
                })
                .collect();
            let parts = serde_json::to_string(&parts)?;
            let mut invocation = RESERVE.prepare_invoke();
            invocation.arg(asks.len());
            for a in asks {
                invocation.key(c.used_key(&a.key)).key(c.reserved_key(&a.key));
                invocation.arg(a.amount).arg(a.limit.unwrap_or(-1));
            }
            invocation.key(c.hold_key(id)).key(c.holds_key());
            invocation.arg(now + ttl_ms).arg(id).arg(parts).arg(ttl_ms + HOLD_GRACE_MS);
            let answer: Vec<i64> = invocation.invoke_async(&mut c.conn()).await?;
            match answer.as_slice() {
                [-1] => Ok(Ok(())),
                [index, used, reserved, limit] => Ok(Err(Refusal {
                    index: *index as usize,
                    count: Count { used: *used, reserved: *reserved },
                    limit: *limit,
                })),
                // The caller loads counters before it reserves; one that
                // expired in between is loaded again.
                [-2, _] => Err(NotLoaded.into()),
                other => anyhow::bail!("unexpected answer from the reservation script: {other:?}"),
            }
        })
    }

    fn holds<'a>(&'a self, id: &'a str) -> BoxFuture<'a, CounterResult<Option<Parts>>> {
        Box::pin(async move {
            let raw: Option<String> = cmd("GET").arg(self.0.hold_key(id)).query_async(&mut self.0.conn()).await?;
            let Some(raw) = raw else { return Ok(None) };
            let parts: HoldParts = serde_json::from_str(&raw)?;
            Ok(Some(
                parts
                    .into_iter()
                    .map(|(_, amount, user, meter, period_start)| (CounterKey { user, meter, period_start }, amount))
                    .collect(),
            ))
        })
    }

    fn release<'a>(&'a self, id: &'a str) -> BoxFuture<'a, CounterResult<bool>> {
        Box::pin(self.release_one(id))
    }

    fn prolong<'a>(&'a self, id: &'a str, now: i64, ttl_ms: i64) -> BoxFuture<'a, CounterResult<bool>> {
        Box::pin(async move {
            let c = &self.0;
            let existed: i64 = PROLONG
                .key(c.hold_key(id))
                .key(c.holds_key())
                .arg(id)
                .arg(now + ttl_ms)
                .arg(ttl_ms + HOLD_GRACE_MS)
                .invoke_async(&mut c.conn())
                .await?;
            Ok(existed == 1)
        })
    }

    fn apply<'a>(&'a self, settled: &'a [String], added: &'a [(CounterKey, i64)]) -> BoxFuture<'a, CounterResult<()>> {
        // The usage is added before the holds end: in between, another
        // instance sees both (and may refuse early), never neither (which
        // would let it grant past the limit).
        Box::pin(async move {
            if !added.is_empty() {
                let mut invocation = ADD_USED.prepare_invoke();
                for (key, n) in added {
                    invocation.key(self.0.used_key(key)).key(self.0.generation_key(key)).arg(*n);
                }
                invocation.arg(GENERATION_TTL_MS);
                let _: i64 = invocation.invoke_async(&mut self.0.conn()).await?;
            }
            for id in settled {
                self.release_one(id).await?;
            }
            Ok(())
        })
    }

    fn expire(&self, now: i64) -> BoxFuture<'_, CounterResult<usize>> {
        Box::pin(async move {
            let due: Vec<String> = cmd("ZRANGEBYSCORE")
                .arg(self.0.holds_key())
                .arg("-inf")
                .arg(now)
                .arg("LIMIT")
                .arg(0)
                .arg(1000)
                .query_async(&mut self.0.conn())
                .await?;
            let mut expired = 0;
            for id in due {
                // Another instance may have expired it first: counted once.
                expired += usize::from(self.release_one(&id).await?);
            }
            Ok(expired)
        })
    }
}
