-- llmgate benchmark request script for wrk (used by target/release/llmgate-bench).
--
--   wrk -t2 -c32 -d5s --latency -s bench/chat.lua URL -- body=FILE mode=unique|same nonce=N key=K
--
-- body=FILE  an OpenAI chat request with the placeholder @@ID@@ in it
-- mode       unique: @@ID@@ becomes "<nonce>-<thread>-<counter>" in every request,
--            so every request is a cache miss; same: @@ID@@ becomes "0" (cache hits)
-- key        the virtual key sent as "Authorization: Bearer <key>"
--
-- Every response status is checked (non-2xx counted), as are x-llmgate-cache: hit
-- answers. done() prints one machine-readable line starting with LLMGATE_RESULT.

local threads = {}
local next_id = 0

function setup(thread)
   next_id = next_id + 1
   thread:set("thread_id", next_id)
   table.insert(threads, thread)
end

local prefix, suffix, fixed, tag
local counter = 0
non2xx = 0
hits = 0
responses = 0

function init(args)
   local opts = {}
   for i = 0, 32 do
      local a = args[i]
      if a then
         local k, v = string.match(a, "^([%w_]+)=(.*)$")
         if k then opts[k] = v end
      end
   end
   local f = assert(io.open(opts.body, "rb"))
   local text = f:read("*a")
   f:close()
   local s, e = string.find(text, "@@ID@@", 1, true)
   assert(s, "body has no @@ID@@ placeholder")
   prefix = string.sub(text, 1, s - 1)
   suffix = string.sub(text, e + 1)
   tag = (opts.nonce or "0") .. "-" .. tostring(thread_id or 0) .. "-"
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
   wrk.headers["Authorization"] = "Bearer " .. (opts.key or "")
   if opts.mode ~= "unique" then
      fixed = wrk.format(nil, nil, nil, prefix .. "0" .. suffix)
   end
end

function request()
   if fixed then
      return fixed
   end
   if not prefix then
      -- wrk calls request() once on its main Lua state, before init(), to
      -- check the request: give it a valid one.
      return wrk.format()
   end
   counter = counter + 1
   return wrk.format(nil, nil, nil, prefix .. tag .. counter .. suffix)
end

function response(status, headers, body)
   responses = responses + 1
   if status < 200 or status > 299 then
      non2xx = non2xx + 1
   end
   local c = headers["x-llmgate-cache"] or headers["X-Llmgate-Cache"]
   if c == "hit" or c == "semantic-hit" then
      hits = hits + 1
   end
end

function done(summary, latency, requests)
   local bad, hit, seen = 0, 0, 0
   for _, t in ipairs(threads) do
      bad = bad + (t:get("non2xx") or 0)
      hit = hit + (t:get("hits") or 0)
      seen = seen + (t:get("responses") or 0)
   end
   local e = summary.errors
   io.write(string.format(
      "LLMGATE_RESULT requests=%d duration_us=%d p50=%d p90=%d p99=%d responses=%d non2xx=%d hits=%d connect=%d read=%d write=%d timeout=%d status=%d\n",
      summary.requests, summary.duration,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      seen, bad, hit, e.connect, e.read, e.write, e.timeout, e.status))
end
