-- negotiate.lua - miltertest negotiates version 6 with a filter and prints, for every action
-- (SMFIF_*) and protocol option (SMFIP_*) miltertest knows, whether the filter asked for it:
--   action SMFIF_ADDHDRS true
--   option SMFIP_NOBODY false
-- Run: miltertest -D SOCK=inet:PORT@127.0.0.1 -s negotiate.lua
local C = dofile(string.match(debug.getinfo(1, "S").source, "^@?(.*/)[^/]*$") .. "common.lua")
C.run(function()
  local conn = C.open()
  local actions, options = {}, {}
  for k, v in pairs(_G) do
    if type(k) == "string" and type(v) == "number" then
      if k:match("^SMFIF_") then table.insert(actions, k) end
      if k:match("^SMFIP_") then table.insert(options, k) end
    end
  end
  table.sort(actions)
  table.sort(options)
  for _, a in ipairs(actions) do mt.echo("action " .. a .. " " .. tostring(mt.test_action(conn, _G[a]))) end
  for _, o in ipairs(options) do mt.echo("option " .. o .. " " .. tostring(mt.test_option(conn, _G[o]))) end
  mt.disconnect(conn)
end)
