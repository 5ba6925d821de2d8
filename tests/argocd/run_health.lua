-- Runs an Argo CD health script the way Argo CD does, with Lua 5.1 (Argo CD uses gopher-lua, a
-- Lua 5.1): the object is the global `obj`, the script's chunk returns a table {status, message},
-- and only the libraries Argo CD opens are there (base, table, string, math, and of os only
-- time, date and clock).
--
--   lua5.1 tests/argocd/run_health.lua HEALTH_SCRIPT OBJECT_FILE
--
-- OBJECT_FILE is Lua source that returns the object as a table (tests/test_argocd_health.py
-- writes it from the YAML sample: JSON null becomes nil, as Argo CD's conversion does).
-- Prints the status on the first line and the message after it; exits 1 on any error.

local script_path, object_path = arg[1], arg[2]
if not script_path or not object_path then
  io.stderr:write("usage: run_health.lua HEALTH_SCRIPT OBJECT_FILE\n")
  os.exit(2)
end

local function fail(message)
  io.stderr:write(tostring(message) .. "\n")
  os.exit(1)
end

local load_object, err = loadfile(object_path)
if not load_object then fail(err) end
setfenv(load_object, {})
local ok, object = pcall(load_object)
if not ok then fail(object) end

local env = {
  assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs, pcall = pcall,
  select = select, tonumber = tonumber, tostring = tostring, type = type, unpack = unpack,
  xpcall = xpcall, rawequal = rawequal, rawget = rawget, rawset = rawset,
  setmetatable = setmetatable, getmetatable = getmetatable,
  table = table, string = string, math = math,
  os = { time = os.time, date = os.date, clock = os.clock },
  obj = object,
}
env._G = env

local chunk, cerr = loadfile(script_path)
if not chunk then fail(cerr) end
setfenv(chunk, env)
local ran, hs = pcall(chunk)
if not ran then fail(hs) end
if type(hs) ~= "table" then fail("the script returned " .. type(hs) .. ", not a table") end

local valid = { Healthy = true, Progressing = true, Degraded = true, Suspended = true, Missing = true, Unknown = true }
if not valid[hs.status] then fail("invalid health status: " .. tostring(hs.status)) end
if hs.message ~= nil and type(hs.message) ~= "string" then fail("message is a " .. type(hs.message)) end
io.write(hs.status, "\n", hs.message or "")
