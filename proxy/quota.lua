-- orcache: check every quota window of one token and, when none is exhausted, count the request.
-- One EVALSHA per request; Redis runs it atomically, so N workers together admit exactly the limit.
--
-- KEYS[1]  minute hash  {prefix}:quota:{<token>}:minute:{minutes since epoch}   fields req, tok
-- KEYS[2]  month hash   {prefix}:quota:{<token>}:month:{YYYY-MM}                fields req, tok, cost
-- ARGV[1..5]  limits in check order: rpm, tpm, requests/month, tokens/month, cost/month (0 = no limit)
-- ARGV[6]  minute key TTL (seconds), ARGV[7] month key TTL (seconds)
--
-- Returns {allowed (1|0), minute req, minute tok, month req, month tok, month cost (string),
--          index of the exhausted limit (1..5) or 0}. Counts include this request when it is allowed;
-- a refused request is not counted. Tokens and cost are added after the response (HINCRBY/HINCRBYFLOAT).
local minute = redis.call('HMGET', KEYS[1], 'req', 'tok')
local month = redis.call('HMGET', KEYS[2], 'req', 'tok', 'cost')
local cost = month[3] or '0'
local used = {tonumber(minute[1]) or 0, tonumber(minute[2]) or 0, tonumber(month[1]) or 0,
              tonumber(month[2]) or 0, tonumber(cost) or 0}
for i = 1, 5 do
  local limit = tonumber(ARGV[i]) or 0
  if limit > 0 and used[i] >= limit then
    return {0, used[1], used[2], used[3], used[4], cost, i}
  end
end
redis.call('HINCRBY', KEYS[1], 'req', 1)
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('HINCRBY', KEYS[2], 'req', 1)
redis.call('EXPIRE', KEYS[2], ARGV[7])
return {1, used[1] + 1, used[2], used[3] + 1, used[4], cost, 0}
