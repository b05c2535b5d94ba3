-- wrk script for the fulcrum benchmark harness.
--
-- Prints one JSON line with the counts and latency percentiles (wrk's own
-- summary has no p99.9). With a rate argument (`-- RATE`, requests/s for this
-- wrk thread) it paces requests: every request claims the next slot of a
-- fixed schedule and waits for it (wrk's delay() hook), so the offered rate
-- is fixed while the server keeps up, instead of "as fast as it answers".
-- Use one wrk thread (-t1) with a rate: each thread runs its own schedule.

local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clock, bench_timespec *ts);
]]
local ts = ffi.new("bench_timespec")
local CLOCK_MONOTONIC = 1

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local interval_ms = nil -- nil: no pacing
local next_slot = nil

function init(args)
  local rate = tonumber(args[1] or "")
  if rate and rate > 0 then
    interval_ms = 1000 / rate
    -- wrk only calls delay() when the script defines it, so define it here.
    delay = function()
      local now = now_ms()
      next_slot = math.max(next_slot or now, now - 1000) + interval_ms
      -- A late request goes at once; slots missed by more than 1s are
      -- forgotten rather than sent as a burst.
      return math.max(0, math.floor(next_slot - now))
    end
  end
end

function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": %d, "status_errors": %d, ' ..
    '"p50_us": %d, "p99_us": %d, "p999_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    latency.max))
end
