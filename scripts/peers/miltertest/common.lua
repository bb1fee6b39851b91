-- common.lua - shared by milterkit's miltertest scripts (loaded with dofile; miltertest is
-- OpenDKIM's MTA-side simulator, nobody on the team wrote it). miltertest prints nothing for an
-- uncaught Lua error, so `run` prints it first.
-- Globals set with miltertest -D NAME=VALUE: SOCK (default inet:9999@127.0.0.1).
local M = {}
M.sock = SOCK or "inet:9999@127.0.0.1"

-- reply code -> SMFIR_* name
M.names = {}
for k, v in pairs(_G) do
  if type(k) == "string" and k:match("^SMFIR_") and type(v) == "number" then M.names[v] = k end
end

-- connects and negotiates version 6 with miltertest's defaults (all actions, all steps)
function M.open()
  mt.set_timeout(10)
  local conn = mt.connect(M.sock, 20, 0.25)
  if conn == nil then error("cannot connect to " .. M.sock) end
  local err = mt.negotiate(conn, 6, nil, nil)
  if err ~= nil then error("negotiate failed: " .. tostring(err)) end
  return conn
end

-- checks the result of a step, prints "reply LABEL SMFIR_X" and returns the name
function M.reply(conn, label, err)
  if err ~= nil then error(label .. " failed: " .. tostring(err)) end
  local r = mt.getreply(conn)
  local name = M.names[r] or string.format("0x%02x", r)
  mt.echo("reply " .. label .. " " .. name)
  return name
end

-- prints "check LABEL true|false" for mt.eom_check(conn, op, ...)
function M.check(conn, label, op, ...)
  local ok, hit = pcall(mt.eom_check, conn, op, ...)
  mt.echo("check " .. label .. " " .. tostring(ok and hit == true))
end

function M.run(main)
  local ok, e = pcall(main)
  if not ok then
    mt.echo("ERROR: " .. tostring(e))
    error(e)
  end
  mt.echo("done")
end

return M
