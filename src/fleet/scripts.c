/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The Lua scripts the fleet runs in Redis, each atomic there: nothing
 * else runs while one does, so a lease is granted from what the whole
 * fleet has spent and leased at that instant. Loaded once per connection
 * (SCRIPT LOAD) and run by EVALSHA (redis.c). Money is integer nano-USD;
 * Lua's numbers are doubles, exact to 2^53 nano-USD ($9,007,199.25) per
 * budget scope and window, which docs/fleet.md states as the limit. A
 * number handed to a Redis command is printed, and Redis refuses "-0" as
 * an integer: a negated amount is only sent when it is not zero.
 */
#include <stddef.h>

#include "fleet_int.h"

/*
 * FLEET_SCRIPT_LEASE: one instance's sync on one budget scope and window.
 * KEYS: the budget hash, the lease expiry zset. ARGV: instance, sequence
 * number, now (Unix ms), lease TTL (ms), cap (-1: none), C = spend this
 * instance settled in the window, F = its worst cases in flight there,
 * T = the lease it wants to hold, expire-at (Unix ms, 0: never).
 * Returns {lease held, fleet spent, fleet leased, C acknowledged, applied,
 * instances holding a lease on the scope, until when an instance was
 * granted less than it asked while others held leases (Unix ms)}: until
 * then every holder gives back what it does not need, so the budget is
 * not stranded in other instances' headroom.
 * A sequence number not above the last one applied changes nothing, so a
 * retried or late sync is harmless; C is cumulative, so reporting it
 * twice counts it once. docs/internals/fleet.md walks through the steps.
 */
static const char lease_lua[] =
    "local b, e, inst = KEYS[1], KEYS[2], ARGV[1]\n"
    "local seq, now, ttl = tonumber(ARGV[2]), tonumber(ARGV[3]),"
    " tonumber(ARGV[4])\n"
    "local cap, cum, fl = tonumber(ARGV[5]), tonumber(ARGV[6]),"
    " tonumber(ARGV[7])\n"
    "local want, xat = tonumber(ARGV[8]), tonumber(ARGV[9])\n"
    "local function get(f) return tonumber(redis.call('HGET', b, f)"
    " or '0') end\n"
    "local function state(applied)\n"
    "  return {get('l:'..inst), get('spent'), get('leased'),"
    " get('r:'..inst), applied, redis.call('ZCARD', e),"
    " get('starve'), get('s:'..inst)}\n"
    "end\n"
    "if seq <= get('s:'..inst) then return state(0) end\n"
    "redis.call('HSET', b, 's:'..inst, ARGV[2])\n"
    /* A lease its holder stopped renewing counts as spent. */
    "for _, d in ipairs(redis.call('ZRANGEBYSCORE', e, '-inf', now)) do\n"
    "  local l = get('l:'..d)\n"
    "  if l > 0 then\n"
    "    redis.call('HINCRBY', b, 'spent', l)\n"
    "    redis.call('HINCRBY', b, 'c:'..d, l)\n"
    "    redis.call('HINCRBY', b, 'leased', -l)\n"
    "    redis.call('HSET', b, 'l:'..d, 0)\n"
    "  end\n"
    "  redis.call('ZREM', e, d)\n"
    "end\n"
    /* Back: what was charged for this instance's lease is replaced by
     * what it reports it spent (its ledger knows). */
    "local c = get('c:'..inst)\n"
    "if c > 0 then\n"
    "  redis.call('HINCRBY', b, 'spent', -c)\n"
    "  redis.call('HSET', b, 'c:'..inst, 0)\n"
    "end\n"
    "local l = get('l:'..inst)\n"
    "local d = cum - get('r:'..inst)\n"
    "if d > 0 then\n"
    "  redis.call('HINCRBY', b, 'spent', d)\n"
    "  redis.call('HSET', b, 'r:'..inst, ARGV[6])\n"
    "  local cut = math.min(l, d)\n"
    "  l = l - cut\n"
    "  if cut > 0 then redis.call('HINCRBY', b, 'leased', -cut) end\n"
    "end\n"
    /* Calls in flight stay covered (only after a charged lease). */
    "if l < fl then\n"
    "  redis.call('HINCRBY', b, 'leased', fl - l)\n"
    "  l = fl\n"
    "end\n"
    "if want > l and cap >= 0 then\n"
    "  local room = cap - get('spent') - get('leased')\n"
    "  local add = math.min(want - l, math.max(0, room))\n"
    "  if add > 0 then\n"
    "    l = l + add\n"
    "    redis.call('HINCRBY', b, 'leased', add)\n"
    "  end\n"
    /* Short while others hold leases: ask them to give back what
     * they are not using (they learn it on their next sync). */
    "  if l < want and get('leased') > l then\n"
    "    redis.call('HSET', b, 'starve', now + 3000)\n"
    "  end\n"
    "elseif want < l then\n"
    "  local ret = l - math.max(want, fl)\n"
    "  if ret > 0 then\n"
    "    l = l - ret\n"
    "    redis.call('HINCRBY', b, 'leased', -ret)\n"
    "  end\n"
    "end\n"
    "redis.call('HSET', b, 'l:'..inst, l)\n"
    "if l > 0 then redis.call('ZADD', e, now + ttl, inst)"
    " else redis.call('ZREM', e, inst) end\n"
    "if xat > 0 then\n"
    "  redis.call('PEXPIREAT', b, xat)\n"
    "  redis.call('PEXPIREAT', e, xat)\n"
    "end\n"
    "return state(1)\n";

/*
 * FLEET_SCRIPT_RATE: one instance's sync on one rate-limit scope, leases
 * on counts. KEYS: the scope's hash (per instance: lq, lt leases; rq, rt
 * counts reported; ep the process they count for; s the sequence), its
 * lease expiry zset, and its one-second buckets of the fleet's requests
 * (q:<second>) and settled tokens (t:<second>). ARGV: instance, sequence
 * number, now, lease TTL, process epoch, requests/min and tokens/min
 * limits (0: none), requests admitted and tokens settled here by this
 * process (cumulative), tokens in flight here, the request and token
 * leases wanted, the bucket width (ms) and how many buckets make the
 * window (1000 and 60 for a minute; a rolling budget's own, its nano-USD
 * in the token channel). Returns {request lease, token lease, fleet requests in
 * the last minute, fleet tokens, requests leased, tokens leased, requests
 * counted, tokens counted, applied, the last sequence number applied}. Reported counts land in the current
 * bucket, so they stay in the minute a little longer than the
 * calls they count: stricter, never looser. An expired lease counts as
 * used in the second it expired.
 */
static const char rate_lua[] =
    "local h, e, bk, inst = KEYS[1], KEYS[2], KEYS[3], ARGV[1]\n"
    "local seq, now, ttl = tonumber(ARGV[2]), tonumber(ARGV[3]),"
    " tonumber(ARGV[4])\n"
    "local epoch, rpm, tpm = ARGV[5], tonumber(ARGV[6]),"
    " tonumber(ARGV[7])\n"
    "local cq, ct, ft = tonumber(ARGV[8]), tonumber(ARGV[9]),"
    " tonumber(ARGV[10])\n"
    "local wq, wt = tonumber(ARGV[11]), tonumber(ARGV[12])\n"
    "local width, slots = tonumber(ARGV[13]), tonumber(ARGV[14])\n"
    "local sec = math.floor(now / width)\n"
    "local function get(f) return tonumber(redis.call('HGET', h, f)"
    " or '0') end\n"
    "local function window()\n"
    "  local q, t = 0, 0\n"
    "  local kv = redis.call('HGETALL', bk)\n"
    "  for i = 1, #kv, 2 do\n"
    "    local s = tonumber(string.sub(kv[i], 3))\n"
    "    if s == nil or s <= sec - slots then"
    " redis.call('HDEL', bk, kv[i])\n"
    "    elseif string.sub(kv[i], 1, 1) == 'q' then"
    " q = q + tonumber(kv[i + 1])\n"
    "    else t = t + tonumber(kv[i + 1]) end\n"
    "  end\n"
    "  return q, t\n"
    "end\n"
    "local function state(applied)\n"
    "  local q, t = window()\n"
    "  return {get('lq:'..inst), get('lt:'..inst), q, t, get('leasedq'),"
    " get('leasedt'), get('rq:'..inst), get('rt:'..inst), applied,"
    " get('s:'..inst)}\n"
    "end\n"
    "if seq <= get('s:'..inst) then return state(0) end\n"
    "redis.call('HSET', h, 's:'..inst, ARGV[2])\n"
    "if redis.call('HGET', h, 'ep:'..inst) ~= epoch then\n"
    /* A new process of this instance: what the last one held counts
     * as used (it may have spent it unreported), as an expired lease. */
    "  local q, t = get('lq:'..inst), get('lt:'..inst)\n"
    "  if q > 0 then\n"
    "    redis.call('HINCRBY', bk, 'q:'..sec, q)\n"
    "    redis.call('HINCRBY', h, 'leasedq', -q)\n"
    "  end\n"
    "  if t > 0 then\n"
    "    redis.call('HINCRBY', bk, 't:'..sec, t)\n"
    "    redis.call('HINCRBY', h, 'leasedt', -t)\n"
    "  end\n"
    "  redis.call('HSET', h, 'lq:'..inst, 0)\n"
    "  redis.call('HSET', h, 'lt:'..inst, 0)\n"
    "  redis.call('ZREM', e, inst)\n"
    "  redis.call('HSET', h, 'ep:'..inst, epoch)\n"
    "  redis.call('HSET', h, 'rq:'..inst, 0)\n"
    "  redis.call('HSET', h, 'rt:'..inst, 0)\n"
    "end\n"
    "for _, d in ipairs(redis.call('ZRANGEBYSCORE', e, '-inf', now)) do\n"
    "  local q, t = get('lq:'..d), get('lt:'..d)\n"
    "  if q > 0 then\n"
    "    redis.call('HINCRBY', bk, 'q:'..sec, q)\n"
    "    redis.call('HINCRBY', h, 'leasedq', -q)\n"
    "  end\n"
    "  if t > 0 then\n"
    "    redis.call('HINCRBY', bk, 't:'..sec, t)\n"
    "    redis.call('HINCRBY', h, 'leasedt', -t)\n"
    "  end\n"
    "  redis.call('HSET', h, 'lq:'..d, 0)\n"
    "  redis.call('HSET', h, 'lt:'..d, 0)\n"
    "  redis.call('ZREM', e, d)\n"
    "end\n"
    "local lq, lt = get('lq:'..inst), get('lt:'..inst)\n"
    "local dq = cq - get('rq:'..inst)\n"
    "if dq > 0 then\n"
    "  redis.call('HINCRBY', bk, 'q:'..sec, dq)\n"
    "  redis.call('HSET', h, 'rq:'..inst, ARGV[8])\n"
    "  local cut = math.min(lq, dq)\n"
    "  lq = lq - cut\n"
    "  if cut > 0 then redis.call('HINCRBY', h, 'leasedq', -cut) end\n"
    "end\n"
    "local dt = ct - get('rt:'..inst)\n"
    "if dt > 0 then\n"
    "  redis.call('HINCRBY', bk, 't:'..sec, dt)\n"
    "  redis.call('HSET', h, 'rt:'..inst, ARGV[9])\n"
    "  local cut = math.min(lt, dt)\n"
    "  lt = lt - cut\n"
    "  if cut > 0 then redis.call('HINCRBY', h, 'leasedt', -cut) end\n"
    "end\n"
    "if lt < ft then\n"
    "  redis.call('HINCRBY', h, 'leasedt', ft - lt)\n"
    "  lt = ft\n"
    "end\n"
    "local q, t = window()\n"
    "if wq > lq and rpm > 0 then\n"
    "  local add = math.min(wq - lq, math.max(0, rpm - q - get('leasedq')))\n"
    "  if add > 0 then lq = lq + add;"
    " redis.call('HINCRBY', h, 'leasedq', add) end\n"
    "elseif wq < lq then\n"
    "  redis.call('HINCRBY', h, 'leasedq', wq - lq)\n"
    "  lq = wq\n"
    "end\n"
    "if wt > lt and tpm > 0 then\n"
    "  local add = math.min(wt - lt, math.max(0, tpm - t - get('leasedt')))\n"
    "  if add > 0 then lt = lt + add;"
    " redis.call('HINCRBY', h, 'leasedt', add) end\n"
    "elseif wt < lt then\n"
    "  local ret = lt - math.max(wt, ft)\n"
    "  if ret > 0 then lt = lt - ret;"
    " redis.call('HINCRBY', h, 'leasedt', -ret) end\n"
    "end\n"
    "redis.call('HSET', h, 'lq:'..inst, lq)\n"
    "redis.call('HSET', h, 'lt:'..inst, lt)\n"
    "if lq > 0 or lt > 0 then redis.call('ZADD', e, now + ttl, inst)"
    " else redis.call('ZREM', e, inst) end\n"
    "for _, k in ipairs({h, e, bk}) do redis.call('PEXPIRE', k,"
    " math.max(86400000, 2 * width * slots)) end\n"
    "return state(1)\n";

/*
 * FLEET_SCRIPT_SHARE_ADD: share an item of a list (a kill, an extension;
 * shared.c). KEYS: the list's hash, its zset of lifted ids. ARGV: id,
 * the item's JSON, the channel, now (Unix ms). Returns 1 when the item
 * is in the hash and announced; 0 when the fleet lifted this id already
 * (kept in the zset until its time, below): the item is not brought
 * back, and the caller lifts its own copy.
 */
static const char share_add_lua[] =
    "local h, t, id = KEYS[1], KEYS[2], ARGV[1]\n"
    "redis.call('ZREMRANGEBYSCORE', t, '-inf', ARGV[4])\n"
    "if redis.call('ZSCORE', t, id) then return 0 end\n"
    "redis.call('HSET', h, id, ARGV[2])\n"
    "redis.call('PUBLISH', ARGV[3], 'add '..id)\n"
    "return 1\n";

/*
 * FLEET_SCRIPT_SHARE_LIFT: lift an item of a list (a kill lifted, an
 * extension revoked) for the whole fleet. KEYS: the list's hash, its
 * zset of lifted ids. ARGV: id, the channel, now (Unix ms), until when
 * the lift is remembered (Unix ms), the most lifts remembered. The id
 * stays in the zset so an instance that was away when it was lifted (and
 * still holds it) lifts it too instead of sharing it again. Returns 1.
 */
static const char share_lift_lua[] =
    "local h, t, id = KEYS[1], KEYS[2], ARGV[1]\n"
    "redis.call('ZREMRANGEBYSCORE', t, '-inf', ARGV[3])\n"
    "redis.call('HDEL', h, id)\n"
    "redis.call('ZADD', t, ARGV[4], id)\n"
    "local n = redis.call('ZCARD', t) - tonumber(ARGV[5])\n"
    "if n > 0 then redis.call('ZREMRANGEBYRANK', t, 0, n - 1) end\n"
    "redis.call('PUBLISH', ARGV[2], 'del '..id)\n"
    "return 1\n";

static const char *const scripts[RCONN_SCRIPTS_MAX] = {
    [FLEET_SCRIPT_LEASE] = lease_lua,
    [FLEET_SCRIPT_RATE] = rate_lua,
    [FLEET_SCRIPT_SHARE_ADD] = share_add_lua,
    [FLEET_SCRIPT_SHARE_LIFT] = share_lift_lua,
};

/* The text of script i, or NULL past the last one. */
const char *
fleet_script_text(int i)
{
	if (i < 0 || i >= RCONN_SCRIPTS_MAX)
		return (NULL);
	return (scripts[i]);
}
