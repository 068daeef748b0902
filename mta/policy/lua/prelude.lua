-- Shared by every policy script of this directory; redis_scripts.py puts it in
-- front of each: keys are named from the prefix in ARGV[1] and checked against KEYS (a key
-- a script was not given sets MISSING, and the script refuses before any write).
local P = ARGV[1]
local HAVE = {}
for _, k in ipairs(KEYS) do HAVE[k] = true end
local MISSING = false
local function K(s)
  local k = P .. s
  if not HAVE[k] then MISSING = true end
  return k
end
local function extend(k, ms)
  if redis.call('PTTL', k) < ms then redis.call('PEXPIRE', k, ms) end
end
