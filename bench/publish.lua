-- wrk script: POST /v2/publish/<destination> with a 1 KiB body and a one-hour
-- delay (so the node only stores, and nothing is delivered while it runs).
--   wrk -t2 -c64 -d20s -s bench/publish.lua http://127.0.0.1:8080 \
--       -- "$QSTASH_TOKEN" http://127.0.0.1:9/hook
local token, destination

function init(args)
  token = args[1] or ""
  destination = args[2] or "http://127.0.0.1:9/hook"
end

function request()
  return wrk.format("POST", "/v2/publish/" .. destination, {
    ["Authorization"] = "Bearer " .. token,
    ["Content-Type"] = "application/json",
    ["Upstash-Delay"] = "1h",
  }, string.rep("x", 1024))
end

-- wrk counts answers outside 2xx/3xx as status errors.
function done(summary, latency, requests)
  io.write(string.format("non-2xx answers: %d\n", summary.errors.status))
end
