-- wrk script of bench/run.py; it fills in BODIES, TOKENS, CHECK and NONCE.
local bodies = {BODIES}
local tokens = {TOKENS}
local check = {CHECK}
local nonce = {NONCE}
local counter = 0
local threads = {}
function setup(thread)
  thread:set("index", counter)
  counter = counter + 1
  table.insert(threads, thread)
end
function init(args)
  sent = 0
  bad = 0
  slot = (index % #bodies) + 1
end
function request()
  sent = sent + 1
  local unique = nonce .. "-" .. tostring(index) .. "-" .. tostring(sent)
  local body = string.gsub(bodies[slot], "@N@", unique)
  local headers = {["Content-Type"] = "application/json"}
  if tokens[slot] ~= "" then headers["Authorization"] = "Bearer " .. tokens[slot] end
  return wrk.format("POST", "/graphql", headers, body)
end
if check then
  function response(status, headers, body)
    if status ~= 200 or not string.find(body, check, 1, true)
       or string.find(body, '"errors"', 1, true) then
      bad = bad + 1
    end
  end
end
function done(summary, latency, requests)
  local bad_total = 0
  for _, t in ipairs(threads) do bad_total = bad_total + (t:get("bad") or 0) end
  local e = summary.errors
  io.write(string.format('RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "errors": %d, "bad": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout, bad_total))
end
