-- wrk script for bench/run.py: one script for both stores and both workloads, so that
-- PaxosKV and etcd are driven by exactly the same client code.
--
--   wrk -t T -c C -d D --latency -s bench/wrk.lua http://HOST:PORT -- STORE WORKLOAD PREFIX KEYS
--
-- STORE     paxoskv | etcd
-- WORKLOAD  put: put-if-absent on fresh keys PREFIX/<thread>/<n> (unique per request)
--           get: linearizable get of the preloaded keys PREFIX/0 .. PREFIX/<KEYS-1>,
--                round-robin
-- Every response is checked (status 200 and the expected outcome: the put created the key
-- or returned its own value, the get found the key's value); done() prints
-- "bench-check: <bad> <sample body>" for run.py.

local threads = {}

function setup(thread)
   thread:set("id", #threads)
   table.insert(threads, thread)
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function base64(s)
   local out = {}
   for i = 1, #s, 3 do
      local a, b, c = s:byte(i, i + 2)
      local n = a * 65536 + (b or 0) * 256 + (c or 0)
      local chars = 2 + (b and 1 or 0) + (c and 1 or 0)
      for k = 1, 4 do
         if k <= chars then
            local sextet = math.floor(n / 2 ^ (6 * (4 - k))) % 64
            out[#out + 1] = B64:sub(sextet + 1, sextet + 1)
         else
            out[#out + 1] = "="
         end
      end
   end
   return table.concat(out)
end

-- A 200 response is as expected when it names the key with its value (every value written
-- here equals its key), or for etcd's transaction, when the transaction created the key.
local function value_is_key(body)
   local key, value = body:match('"key":%s*"(.-)".-"value":%s*"(.-)"')
   return key ~= nil and key == value
end

local function etcd_created(body)
   return body:find('"succeeded":true', 1, true) ~= nil
end

local function paxoskv_put(k)
   return '{"key":"' .. k .. '","value":"' .. k .. '"}'
end

local function paxoskv_get(k)
   return '{"key":"' .. k .. '"}'
end

local function etcd_txn(k)
   local k64 = base64(k)
   return '{"compare":[{"key":"' .. k64 .. '","target":"CREATE","create_revision":"0"}],'
      .. '"success":[{"request_put":{"key":"' .. k64 .. '","value":"' .. k64 .. '"}}],'
      .. '"failure":[{"request_range":{"key":"' .. k64 .. '"}}]}'
end

local function etcd_range(k)
   return '{"key":"' .. base64(k) .. '"}'
end

-- Per store and workload: the path, the JSON body for a key, the check of a 200 body.
local API = {
   paxoskv = {put = {"/v1/put", paxoskv_put, value_is_key},
              get = {"/v1/get", paxoskv_get, value_is_key}},
   etcd = {put = {"/v3/kv/txn", etcd_txn, etcd_created},
           get = {"/v3/kv/range", etcd_range, value_is_key}},
}

local path, body_for, check, workload, prefix, keys
local counter = 0
bad = 0
sample = ""

function init(args)
   local store = args[1]
   workload, prefix, keys = args[2], args[3], tonumber(args[4])
   path, body_for, check = unpack(API[store][workload])
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
end

function request()
   counter = counter + 1
   local key
   if workload == "put" then
      key = prefix .. "/" .. id .. "/" .. counter
   else
      key = prefix .. "/" .. ((id * 7919 + counter) % keys)
   end
   return wrk.format(nil, path, nil, body_for(key))
end

function response(status, headers, body)
   if status ~= 200 or not check(body) then
      bad = bad + 1
      if sample == "" then
         sample = status .. " " .. body:sub(1, 300):gsub("%s+", " ")
      end
   end
end

function done(summary, latency, requests)
   local total, first = 0, ""
   for _, thread in ipairs(threads) do
      total = total + thread:get("bad")
      if first == "" then
         first = thread:get("sample")
      end
   end
   io.write(string.format("bench-check: %d %s\n", total, first))
end
