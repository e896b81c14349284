-- wrk script for bench/redirect.py: a browser user agent, a distinct client address per request
-- (X-Forwarded-For, trusted by the server through CLIENT_IP_HEADER) so that the clicks take the
-- human path (per-address rate check, hourly learning counters) as real traffic does, and one
-- connection per click (Connection: close), as a visitor's browser opens for its one click.
local counter = 0
local agent = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end

function init(args)
  n = 0
end

request = function()
  n = n + 1
  local address = string.format("10.%d.%d.%d", id % 256, math.floor(n / 250) % 250, n % 250 + 1)
  return wrk.format("GET", wrk.path .. "?sub1=bench", {["User-Agent"] = agent, ["X-Forwarded-For"] = address, ["CF-IPCountry"] = "FR", ["Connection"] = "close"})
end
