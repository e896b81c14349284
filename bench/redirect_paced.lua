-- Paced variant of bench/redirect.lua: every connection waits `pause` ms (the first script
-- argument) between a response and its next request, so that C connections offer about
-- C * 1000 / (pause + latency) requests a second instead of as many as the server can take.
local counter = 0
local agent = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end

function init(args)
  n = 0
  pause = tonumber(args[1]) or 0
end

function delay()
  return pause
end

request = function()
  n = n + 1
  local address = string.format("10.%d.%d.%d", id % 256, math.floor(n / 250) % 250, n % 250 + 1)
  return wrk.format("GET", wrk.path .. "?sub1=bench", {["User-Agent"] = agent, ["X-Forwarded-For"] = address, ["CF-IPCountry"] = "FR", ["Connection"] = "close"})
end
