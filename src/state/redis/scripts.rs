//! The server-side scripts: every operation on shared state that must be atomic (take or
//! give back budget, lease or release slots, open, close and half-open admission) is one Lua
//! script, run with `EVALSHA` (loaded on first use, again after a server restart).
//!
//! Versioning: the layout of the keys these scripts touch is version [`VERSION`], which is part
//! of every key (`<key_prefix>:v1:…`) and of every script's first line, so a script changes its
//! SHA when its version does, and processes of two versions never read each other's keys
//! during a rolling deploy.
//!
//! Time is the server's (`TIME`), in milliseconds: processes on several hosts never compare
//! their clocks. Durations travel as "milliseconds from now" in both directions.
//!
//! Every multi-key script takes keys that share one hash tag (`{…}`), so it runs on one node
//! of a Redis Cluster too.

use std::sync::LazyLock;

use redis::Script;

/// Version of the key layout and scripts.
pub const VERSION: u32 = 1;

const NOW: &str = "local tm = redis.call('TIME')\nlocal now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)\n";

fn script(name: &str, body: &str) -> Script {
    Script::new(&format!("-- echelon state v{VERSION}: {name}\n{NOW}{body}"))
}

/// Lease a slice of a rate budget, after settling earlier slices.
///
/// KEYS: `z` (grant id → expiry), `h` (`u<id>` units per grant, `t` total, `n` id sequence;
/// for a bucket `bal` and `last`). ARGV: kind (`w` window | `b` bucket), limit, window ms (or
/// refill per second), want, need, validity ms, then (id, unused, ms since last spent or -1)
/// per settled slice. A window grant counts until it could last have been spent (its validity)
/// plus the window; settling gives back what was not spent and moves the expiry to the last
/// spend plus the window. Returns `{granted, id, wait_ms, used}`.
pub static TAKE: LazyLock<Script> = LazyLock::new(|| {
    script(
        "take",
        r#"
local z, h = KEYS[1], KEYS[2]
local kind = ARGV[1]
local limit = tonumber(ARGV[2])
local per = tonumber(ARGV[3])
local want, need, valid = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
if kind == 'b' then
  local size, rate = limit, per
  local bal = tonumber(redis.call('HGET', h, 'bal') or size)
  local last = tonumber(redis.call('HGET', h, 'last') or now)
  if now > last and rate > 0 then bal = math.min(size, bal + (now - last) * rate / 1000) end
  for i = 7, #ARGV, 3 do bal = math.min(size, bal + tonumber(ARGV[i + 1])) end
  local grant = 0
  if need > 0 and bal >= math.min(need, size) and (need <= size or bal >= size) then
    grant = math.max(need, math.min(want, math.floor(bal)))
  end
  bal = bal - grant
  redis.call('HSET', h, 'bal', tostring(bal), 'last', now)
  local ttl = 172800000
  if rate > 0 then ttl = math.ceil(size / rate * 1000) + 60000 end
  redis.call('PEXPIRE', h, ttl)
  if grant > 0 or need == 0 then return {grant, 0, 0, 0} end
  local wait = 31536000000
  if rate > 0 then wait = math.ceil((math.min(need, size) - bal) / rate * 1000) end
  return {0, 0, math.max(wait, 1), 0}
end
local window = per
for i = 7, #ARGV, 3 do
  local id = ARGV[i]
  local unused, age = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local u = tonumber(redis.call('HGET', h, 'u' .. id))
  if u then
    local back = math.min(unused, u)
    -- `0 - x`, never `-x`: Lua formats a negated 0 as "-0", which HINCRBY refuses.
    if back > 0 then redis.call('HINCRBY', h, 't', 0 - back) end
    if u - back <= 0 then
      redis.call('HDEL', h, 'u' .. id)
      redis.call('ZREM', z, id)
    else
      if back > 0 then redis.call('HSET', h, 'u' .. id, u - back) end
      if age >= 0 then redis.call('ZADD', z, 'XX', 'LT', now - age + window, id) end
    end
  end
end
local old = redis.call('ZRANGEBYSCORE', z, '-inf', now)
for _, id in ipairs(old) do
  redis.call('HINCRBY', h, 't', 0 - tonumber(redis.call('HGET', h, 'u' .. id) or '0'))
  redis.call('HDEL', h, 'u' .. id)
end
if #old > 0 then redis.call('ZREMRANGEBYSCORE', z, '-inf', now) end
local used = tonumber(redis.call('HGET', h, 't') or '0')
if used < 0 then
  used = 0
  redis.call('HSET', h, 't', 0)
end
if need == 0 then return {0, 0, 0, used} end
local free = limit - used
local grant = 0
if free >= need then
  grant = math.max(need, math.min(want, free))
elseif used == 0 then
  grant = need
end
if grant > 0 then
  local id = redis.call('HINCRBY', h, 'n', 1)
  redis.call('HSET', h, 'u' .. id, grant)
  redis.call('HINCRBY', h, 't', grant)
  redis.call('ZADD', z, now + valid + window, id)
  redis.call('PEXPIRE', z, valid + window + 60000)
  redis.call('PEXPIRE', h, valid + window + 60000)
  return {grant, id, 0, used + grant}
end
local wait = window
local freed = 0
local entries = redis.call('ZRANGE', z, 0, -1, 'WITHSCORES')
for i = 1, #entries, 2 do
  freed = freed + tonumber(redis.call('HGET', h, 'u' .. entries[i]) or '0')
  if used - freed + need <= limit or used - freed <= 0 then
    wait = tonumber(entries[i + 1]) - now
    break
  end
end
return {0, 0, math.max(wait, 1), used}
"#,
    )
});

/// Correct a rate budget by a signed number of units (a batch of TPM corrections, or what a
/// process used on its own while the server was out of reach). KEYS as [`TAKE`]. ARGV: kind,
/// limit, window ms (or refill per second), delta. Positive: recorded as used now (for a
/// window, counted for one window). Negative: taken off the oldest grants (a window never
/// drops below the true usage that way) or added back to a bucket. Returns the units in use.
pub static ADJUST: LazyLock<Script> = LazyLock::new(|| {
    script(
        "adjust",
        r#"
local z, h = KEYS[1], KEYS[2]
local kind, limit, per, delta = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if kind == 'b' then
  local bal = tonumber(redis.call('HGET', h, 'bal') or limit)
  bal = math.min(limit, bal - delta)
  redis.call('HSET', h, 'bal', tostring(bal))
  if not redis.call('HGET', h, 'last') then redis.call('HSET', h, 'last', now) end
  return 0
end
if delta > 0 then
  local id = redis.call('HINCRBY', h, 'n', 1)
  redis.call('HSET', h, 'u' .. id, delta)
  redis.call('HINCRBY', h, 't', delta)
  redis.call('ZADD', z, now + per, id)
  redis.call('PEXPIRE', z, per + 60000)
  redis.call('PEXPIRE', h, per + 60000)
else
  local back = 0 - delta
  local ids = redis.call('ZRANGE', z, 0, -1)
  for _, id in ipairs(ids) do
    if back <= 0 then break end
    local u = tonumber(redis.call('HGET', h, 'u' .. id) or '0')
    local take = math.min(u, back)
    back = back - take
    redis.call('HINCRBY', h, 't', 0 - take)
    if u - take <= 0 then
      redis.call('HDEL', h, 'u' .. id)
      redis.call('ZREM', z, id)
    else
      redis.call('HSET', h, 'u' .. id, u - take)
    end
  end
end
return tonumber(redis.call('HGET', h, 't') or '0')
"#,
    )
});

/// Lease concurrency slots. KEYS: `z` (process → lease expiry), `h` (process → slots held),
/// `w` (someone is short of slots). ARGV: process, want, limit, lease ms, force, channel,
/// message. Expired leases (a process that died) are purged first. `force` sets this process's
/// holding to `want` whatever the limit (a resync: those requests are in flight already).
/// A request that gets fewer than it wanted marks the key wanted and publishes `message`, so
/// holders hand back idle slots. Returns `{granted, held in total}`.
pub static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    script(
        "acquire",
        r#"
local z, h, w = KEYS[1], KEYS[2], KEYS[3]
local me, want, limit, ttl, force = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local old = redis.call('ZRANGEBYSCORE', z, '-inf', now)
for _, p in ipairs(old) do redis.call('HDEL', h, p) end
if #old > 0 then redis.call('ZREMRANGEBYSCORE', z, '-inf', now) end
local total = 0
for _, v in ipairs(redis.call('HVALS', h)) do total = total + tonumber(v) end
local mine = tonumber(redis.call('HGET', h, me) or '0')
local grant
if force == '1' then
  total = total - mine + want
  mine = want
  grant = want
else
  grant = math.max(0, math.min(want, limit - total))
  mine = mine + grant
  total = total + grant
end
if mine > 0 then
  redis.call('HSET', h, me, mine)
  redis.call('ZADD', z, now + ttl, me)
else
  redis.call('HDEL', h, me)
  redis.call('ZREM', z, me)
end
redis.call('PEXPIRE', z, ttl * 3)
redis.call('PEXPIRE', h, ttl * 3)
if force ~= '1' and grant < want then
  redis.call('SET', w, 1, 'PX', ttl)
  redis.call('PUBLISH', ARGV[6], ARGV[7])
end
return {grant, total}
"#,
    )
});

/// Give back slots. KEYS as [`ACQUIRE`]. ARGV: process, count, channel, message. Publishes
/// `message` when another process is short of slots. Returns the slots this process still holds.
pub static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    script(
        "release",
        r#"
local z, h, w = KEYS[1], KEYS[2], KEYS[3]
local me, n = ARGV[1], tonumber(ARGV[2])
local mine = tonumber(redis.call('HGET', h, me) or '0')
mine = math.max(0, mine - n)
if mine > 0 then
  redis.call('HSET', h, me, mine)
else
  redis.call('HDEL', h, me)
  redis.call('ZREM', z, me)
end
if redis.call('EXISTS', w) == 1 then redis.call('PUBLISH', ARGV[3], ARGV[4]) end
return mine
"#,
    )
});

/// Extend this process's slot lease. KEYS as [`ACQUIRE`]. ARGV: process, lease ms. Returns
/// the slots it holds, or -1 when its lease is gone (it expired, or the server lost it).
pub static RENEW: LazyLock<Script> = LazyLock::new(|| {
    script(
        "renew",
        r#"
local z, h = KEYS[1], KEYS[2]
local me, ttl = ARGV[1], tonumber(ARGV[2])
local exp = redis.call('ZSCORE', z, me)
local mine = redis.call('HGET', h, me)
if not exp or not mine or tonumber(exp) <= now then return -1 end
redis.call('ZADD', z, now + ttl, me)
redis.call('PEXPIRE', z, ttl * 3)
redis.call('PEXPIRE', h, ttl * 3)
return tonumber(mine)
"#,
    )
});

/// Breaker phases as stored: 0 closed, 1 open, 2 half-open.
///
/// Open a breaker. KEYS: the breaker hash (`ph` phase, `ep` period, `un` open until, `ca`
/// cause, `gr` probes granted, `ok` probes succeeded, `dl` half-open deadline). ARGV: rest ms,
/// cause, channel, process, key. Opening an open breaker for longer extends it in the same
/// period; otherwise a new period starts. Publishes `b|process|period|1|rest|cause|key` when
/// anything changed. Returns `{period, rest ms}` (what holds now).
pub static BOPEN: LazyLock<Script> = LazyLock::new(|| {
    script(
        "bopen",
        r#"
local b = KEYS[1]
local rest, cause = tonumber(ARGV[1]), ARGV[2]
local ph = tonumber(redis.call('HGET', b, 'ph') or '0')
local ep = tonumber(redis.call('HGET', b, 'ep') or '0')
local un = tonumber(redis.call('HGET', b, 'un') or '0')
local want = now + rest
if ph == 1 and un >= want then return {ep, un - now} end
if ph ~= 1 then
  ep = ep + 1
  redis.call('HSET', b, 'ep', ep, 'gr', 0, 'ok', 0)
end
redis.call('HSET', b, 'ph', 1, 'un', want, 'ca', cause)
redis.call('PEXPIRE', b, rest + 86400000)
redis.call('PUBLISH', ARGV[3], 'b|' .. ARGV[4] .. '|' .. ep .. '|1|' .. rest .. '|' .. cause .. '|' .. ARGV[5])
return {ep, rest}
"#,
    )
});

/// Close a breaker. KEYS: the breaker hash. ARGV: channel, process, key. Publishes
/// `b|process|period|0|0|-|key` when it was not closed. Returns the period.
pub static BCLOSE: LazyLock<Script> = LazyLock::new(|| {
    script(
        "bclose",
        r#"
local b = KEYS[1]
local ph = tonumber(redis.call('HGET', b, 'ph') or '0')
local ep = tonumber(redis.call('HGET', b, 'ep') or '0')
if ph == 0 then return ep end
ep = ep + 1
redis.call('HSET', b, 'ph', 0, 'ep', ep, 'gr', 0, 'ok', 0)
redis.call('PEXPIRE', b, 86400000)
redis.call('PUBLISH', ARGV[1], 'b|' .. ARGV[2] .. '|' .. ep .. '|0|0|-|' .. ARGV[3])
return ep
"#,
    )
});

/// Half-open admission across the cluster. KEYS: the breaker hash. ARGV: want, probes of a
/// period (`half_open_requests`), probe lease ms. Once the rest is over the breaker turns
/// half-open and hands out at most that many probe slots per period (the number is kept with
/// the period, `sl`, so a reload that changes it mid-period applies from the next one); if their verdicts do not
/// come within the lease (their process died), they are handed out again. Returns
/// `{phase, period, n}`: n = slots granted (half-open) or rest ms left (open).
pub static BPROBE: LazyLock<Script> = LazyLock::new(|| {
    script(
        "bprobe",
        r#"
local b = KEYS[1]
local want, slots, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local ph = tonumber(redis.call('HGET', b, 'ph') or '0')
local ep = tonumber(redis.call('HGET', b, 'ep') or '0')
if ph == 0 then return {0, ep, 0} end
local un = tonumber(redis.call('HGET', b, 'un') or '0')
if ph == 1 and now < un then return {1, ep, un - now} end
local gr = tonumber(redis.call('HGET', b, 'gr') or '0')
local dl = tonumber(redis.call('HGET', b, 'dl') or '0')
if ph == 1 or now > dl then
  gr = 0
  redis.call('HSET', b, 'ph', 2, 'ok', 0, 'dl', now + ttl, 'sl', slots)
else
  slots = tonumber(redis.call('HGET', b, 'sl') or slots)
end
local n = math.max(0, math.min(want, slots - gr))
redis.call('HSET', b, 'gr', gr + n)
return {2, ep, n}
"#,
    )
});

/// A probe of period `ep` succeeded. KEYS: the breaker hash. ARGV: period, probes of a
/// period (if the period kept none), channel, process, key. The breaker closes (a new period,
/// published) once as many probes succeeded as the period handed out slots for. Returns `{phase, period}`.
pub static BOK: LazyLock<Script> = LazyLock::new(|| {
    script(
        "bok",
        r#"
local b = KEYS[1]
local seen, slots = tonumber(ARGV[1]), tonumber(ARGV[2])
local ph = tonumber(redis.call('HGET', b, 'ph') or '0')
local ep = tonumber(redis.call('HGET', b, 'ep') or '0')
if ph ~= 2 or ep ~= seen then return {ph, ep} end
local ok = tonumber(redis.call('HINCRBY', b, 'ok', 1))
if ok < tonumber(redis.call('HGET', b, 'sl') or slots) then return {2, ep} end
ep = ep + 1
redis.call('HSET', b, 'ph', 0, 'ep', ep, 'gr', 0, 'ok', 0)
redis.call('PUBLISH', ARGV[3], 'b|' .. ARGV[4] .. '|' .. ep .. '|0|0|-|' .. ARGV[5])
return {0, ep}
"#,
    )
});

/// Read a breaker (resync and the periodic backstop poll). KEYS: the breaker hash. Returns
/// `{phase, period, rest ms, cause}` (an open breaker whose rest is over reads as half-open).
pub static BREAD: LazyLock<Script> = LazyLock::new(|| {
    script(
        "bread",
        r#"
local b = KEYS[1]
local ph = tonumber(redis.call('HGET', b, 'ph') or '0')
local ep = tonumber(redis.call('HGET', b, 'ep') or '0')
local un = tonumber(redis.call('HGET', b, 'un') or '0')
local ca = redis.call('HGET', b, 'ca') or 'failures'
if ph == 1 and un <= now then ph = 2 end
return {ph, ep, math.max(0, un - now), ca}
"#,
    )
});

/// Set a cooldown unless a longer one runs. KEYS: the cooldown key. ARGV: ms, channel,
/// process, key. Publishes `c|process|ms|key` when it changed. Returns the ms left.
pub static COOL: LazyLock<Script> = LazyLock::new(|| {
    script(
        "cool",
        r#"
local c = KEYS[1]
local ms = tonumber(ARGV[1])
local left = redis.call('PTTL', c)
if left >= ms then return left end
redis.call('SET', c, 1, 'PX', ms)
redis.call('PUBLISH', ARGV[2], 'c|' .. ARGV[3] .. '|' .. ms .. '|' .. ARGV[4])
return ms
"#,
    )
});

/// A process's heartbeat. KEYS: the process registry, the boot marker. ARGV: process, lease ms,
/// a fresh boot token. Registers the process until now + lease, drops the dead, and creates
/// the boot marker when missing (a new or emptied server). Returns `{processes alive, boot}`.
pub static BEAT: LazyLock<Script> = LazyLock::new(|| {
    script(
        "beat",
        r#"
local procs, boot = KEYS[1], KEYS[2]
redis.call('ZADD', procs, now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', procs, '-inf', now)
redis.call('PEXPIRE', procs, tonumber(ARGV[2]) * 3)
local token = redis.call('GET', boot)
if not token then
  redis.call('SET', boot, ARGV[3])
  token = ARGV[3]
end
return {redis.call('ZCARD', procs), token}
"#,
    )
});
