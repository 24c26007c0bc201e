-- fluxrate: one atomic rate-limit decision over one or more limits of one subject.
--
-- KEYS: two per limit (its state, and an auxiliary key: the sliding log's member sequence;
-- the other algorithms name their state key twice).
-- ARGV: now (integer microseconds; -1 reads the server's TIME), mode, m (the number of limits),
-- ttl_extra (milliseconds added to every TTL: 0, except under a test's manual time, which does
-- not follow the server's clock), then six per limit: algorithm, t, cap, n, max_wait, extra.
--   algorithm 1 token bucket, 2 leaky bucket (t = emission interval, cap = burst / capacity);
--             3 fixed window, 4 sliding window counter, 5 sliding log (t = window, cap = limit)
--   mode 0 decide and write (all limits or none), 1 decide without writing, 2 snapshot
--        (remaining for one more call), 3 reset (delete), 4 refund (token and leaky bucket:
--        give back `n` if the stored TAT is still `extra`, the TAT this call left)
--   max_wait: the longest delay a reservation may take (-1: any)
-- Returns integers only: {now, all admitted (1/0), then five per limit}:
--   admitted: 1, delay, remaining, reset_after, tat_after
--   limited:  0, retry_after, 0, reset_after, 0
--   never:   -1, 0, 0, 0, 0          (n above the capacity)
--   snapshot: 1, retry_after, remaining, reset_after, 0
-- Every number is an integer below 2^53 (the client checks the limits it sends), so Lua's
-- doubles are exact. Numbers are written with '%d', never with Lua's lossy tostring.

-- The codes, one per line: the client's `ScriptAlgorithm`, `Mode` and `Status`
-- (fluxrate/src/redis/script.rs), whose unit test reads these lines and compares.
local TOKEN_BUCKET = 1
local LEAKY_BUCKET = 2
local FIXED_WINDOW = 3
local SLIDING_WINDOW_COUNTER = 4
local SLIDING_LOG = 5
local DECIDE = 0
local DRY_RUN = 1
local SNAPSHOT = 2
local RESET = 3
local REFUND = 4
local ADMITTED = 1
local LIMITED = 0
local NEVER = -1

local function idiv(a, b)
  local q = math.floor(a / b)
  if q * b > a then q = q - 1 elseif (q + 1) * b <= a then q = q + 1 end
  return q
end
local function cdiv(a, b) return -idiv(-a, b) end
local function str(x) return string.format('%d', x) end
local function pos(x) if x < 0 then return 0 end return x end
-- A TTL of exactly what the state needs, rounded up to the millisecond, never 0.
local ttl_extra = tonumber(ARGV[4])
local function ms(us) return str(math.max(1, cdiv(us, 1000)) + ttl_extra) end

local now = tonumber(ARGV[1])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local mode = tonumber(ARGV[2])
local m = tonumber(ARGV[3])

-- Token bucket (GCRA) and leaky bucket (the same TAT, reserving a place in the queue).
local function gcra(key, leaky, t, b, n, max_wait)
  local tat = tonumber(redis.call('GET', key) or 0)
  if mode == SNAPSHOT then
    local rem = pos(b - cdiv(pos(tat - now), t))
    return {ADMITTED, pos(tat + t - now - b * t), rem, pos(tat - now), 0}
  end
  if n > b then return {NEVER, 0, 0, 0, 0} end
  local inc, bt = n * t, b * t
  local d
  if leaky then
    local base = math.max(tat, now)
    local over = base + inc - now - bt
    if over > 0 then return {LIMITED, over, 0, pos(tat - now), 0} end
    d = base
  else
    d = math.max(tat + inc - bt, now)
  end
  local wait = d - now
  if max_wait >= 0 and wait > max_wait then return {LIMITED, wait, 0, pos(tat - now), 0} end
  local new = math.max(tat, d) + inc
  return {ADMITTED, wait, pos(b - cdiv(new - now, t)), new - now, new}, function()
    redis.call('SET', key, str(new), 'PX', ms(new - now))
  end
end

-- The state of a window limit: integers separated by ':'.
local function fields(key)
  local s = redis.call('GET', key)
  if not s then return nil end
  local out = {}
  for x in string.gmatch(s, '%d+') do out[#out + 1] = tonumber(x) end
  return out
end

-- Fixed window: "k:count", k the window index.
local function fixed(key, w, l, n)
  local k = idiv(now, w)
  local kc, cc = k, 0
  local s = fields(key)
  if s and s[1] >= k then kc, cc = s[1], s[2] end
  local function end_of() if cc >= 1 then return (kc + 1) * w end return kc * w end
  if mode == SNAPSHOT then
    local rem, retry, reset = 0, 0, 0
    if kc == k then rem = l - cc end
    if rem == 0 then
      local nk = kc
      if cc + 1 > l then nk = kc + 1 end
      retry = pos(nk * w - now)
    end
    if kc > k or cc > 0 then reset = pos(end_of() - now) end
    return {ADMITTED, retry, rem, reset, 0}
  end
  if n > l then return {NEVER, 0, 0, 0, 0} end
  if kc > k or cc + n > l then
    local nk = kc
    if cc + n > l then nk = kc + 1 end
    return {LIMITED, pos(nk * w - now), 0, pos(end_of() - now), 0}
  end
  local c = cc + n
  return {ADMITTED, 0, l - c, (k + 1) * w - now, 0}, function()
    redis.call('SET', key, str(k) .. ':' .. str(c), 'PX', ms((k + 1) * w - now))
  end
end

-- Sliding window counter: "k:previous:current"; the estimate weighs the previous window by
-- the part of it still inside the sliding window, all in exact integers.
local function counter(key, w, l, n)
  local k = idiv(now, w)
  local v = {k = k, e = now - k * w, prev = 0, curr = 0}
  local s = fields(key)
  if s then
    if s[1] == k then v.prev, v.curr = s[2], s[3]
    elseif s[1] == k - 1 then v.prev = s[3]
    elseif s[1] > k then v = {k = s[1], e = 0, prev = s[2], curr = s[3]} end
  end
  local function fits(c) return v.prev * (w - v.e) + (v.curr + c) * w <= l * w end
  local function reset_at(x)
    if x.curr > 0 then return x.k * w + 2 * w elseif x.prev > 0 then return x.k * w + w end
    return 0
  end
  local function fits_at(c)
    local start = v.k * w
    if v.curr + c <= l then
      return start + w - idiv((l - v.curr - c) * w, math.max(v.prev, 1))
    end
    return start + 2 * w - idiv((l - c) * w, v.curr)
  end
  local function remaining(x)
    return pos(idiv(pos(l * w - x.prev * (w - x.e)), w) - x.curr)
  end
  if mode == SNAPSHOT then
    local rem, retry = remaining(v), 0
    if rem == 0 then retry = pos(fits_at(1) - now) end
    return {ADMITTED, retry, rem, pos(reset_at(v) - now), 0}
  end
  if n > l then return {NEVER, 0, 0, 0, 0} end
  if not fits(n) then
    return {LIMITED, pos(fits_at(n) - now), 0, pos(reset_at(v) - now), 0}
  end
  local after = {k = v.k, e = v.e, prev = v.prev, curr = v.curr + n}
  local reset = reset_at(after)
  return {ADMITTED, 0, remaining(after), pos(reset - now), 0}, function()
    redis.call('SET', key, str(after.k) .. ':' .. str(after.prev) .. ':' .. str(after.curr),
      'PX', ms(reset - now))
  end
end

-- Exact sliding log: a sorted set of admission times (one member per unit of weight, named by
-- a sequence kept in the auxiliary key). A call stamped at t counts while now < t + w. Only
-- expired members are ever removed, and only as many as the new call needs.
local function log(key, seq, w, l, n)
  local card = redis.call('ZCARD', key)
  local live = redis.call('ZCOUNT', key, '(' .. str(now - w), '+inf')
  local free = l - live
  local function leaves(rank)
    local r = redis.call('ZRANGE', key, rank, rank, 'WITHSCORES')
    if r[2] == nil then return 0 end
    return tonumber(r[2]) + w
  end
  local function refusal(c)
    -- The c-th smallest leaving time over all l places (empty places leave at 0).
    local i = c - (l - card)
    local at = 0
    if i >= 1 then at = leaves(i - 1) end
    return math.max(pos(at - now), 1), pos(leaves(-1) - now)
  end
  if mode == SNAPSHOT then
    if free > 0 then return {ADMITTED, 0, free, pos(leaves(-1) - now), 0} end
    local retry, reset = refusal(1)
    return {ADMITTED, retry, 0, reset, 0}
  end
  if n > l then return {NEVER, 0, 0, 0, 0} end
  if n > free then
    local retry, reset = refusal(n)
    return {LIMITED, retry, 0, reset, 0}
  end
  return {ADMITTED, 0, free - n, w, 0}, function()
    local evict = n - (l - card)
    if evict > 0 then redis.call('ZREMRANGEBYRANK', key, 0, evict - 1) end
    local last = redis.call('INCRBY', seq, n)
    local j = last - n + 1
    while j <= last do
      -- At most 500 members per ZADD, well inside Lua's limit on unpacked arguments.
      local args = {}
      for id = j, math.min(last, j + 499) do
        args[#args + 1] = str(now)
        args[#args + 1] = str(id)
      end
      redis.call('ZADD', key, unpack(args))
      j = j + 500
    end
    local ttl = ms(pos(leaves(-1) - now))
    redis.call('PEXPIRE', key, ttl)
    redis.call('PEXPIRE', seq, ttl)
  end
end

local out = {now, ADMITTED}
local writes = {}
for i = 1, m do
  local a = 4 + (i - 1) * 6
  local alg, t, cap = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local n, max_wait, extra = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5]), tonumber(ARGV[a + 6])
  local key, aux = KEYS[2 * i - 1], KEYS[2 * i]
  local r, write
  if mode == RESET then
    redis.call('DEL', key, aux)
    r = {ADMITTED, 0, 0, 0, 0}
  elseif mode == REFUND then
    -- ADMITTED: given back; LIMITED: not.
    r = {LIMITED, 0, 0, 0, 0}
    local bucket = alg == TOKEN_BUCKET or alg == LEAKY_BUCKET
    if bucket and tonumber(redis.call('GET', key) or -1) == extra then
      local back = extra - n * t
      if back > now then
        redis.call('SET', key, str(back), 'PX', ms(back - now))
      else
        redis.call('DEL', key)
      end
      r[1] = ADMITTED
    end
  elseif alg == TOKEN_BUCKET or alg == LEAKY_BUCKET then
    r, write = gcra(key, alg == LEAKY_BUCKET, t, cap, n, max_wait)
  elseif alg == FIXED_WINDOW then r, write = fixed(key, t, cap, n)
  elseif alg == SLIDING_WINDOW_COUNTER then r, write = counter(key, t, cap, n)
  else r, write = log(key, aux, t, cap, n) end -- SLIDING_LOG
  if r[1] ~= ADMITTED then out[2] = LIMITED end
  if write then writes[#writes + 1] = write end
  for j = 1, 5 do out[#out + 1] = r[j] end
end
if mode == DECIDE and out[2] == ADMITTED then
  for _, write in ipairs(writes) do write() end
end
return out
