-- stages.lua - one message, stage by stage: connect, helo, mail, rcpt, data, header From,
-- header Subject, eoh, body, eom. Prints "reply STAGE SMFIR_X" for each and stops at the first
-- reply that is not SMFIR_CONTINUE. With REPLY_CODE (and REPLY_ESC, REPLY_TEXT) set, also
-- prints "check smtpreply true|false" from mt.eom_check(MT_SMTPREPLY, ...).
-- Run: miltertest -D SOCK=inet:PORT@127.0.0.1 [-D SUBJECT=...] -s stages.lua
local C = dofile(string.match(debug.getinfo(1, "S").source, "^@?(.*/)[^/]*$") .. "common.lua")
C.run(function()
  local conn = C.open()
  local steps = {
    {"connect", function() return mt.conninfo(conn, "client.example.test", "127.0.0.1") end},
    {"helo", function() return mt.helo(conn, "client.example.test") end},
    {"mail", function() return mt.mailfrom(conn, "<sender@example.test>") end},
    {"rcpt", function() return mt.rcptto(conn, "<user@example.test>") end},
    {"data", function() return mt.data(conn) end},
    {"header:From", function() return mt.header(conn, "From", "sender@example.test") end},
    {"header:Subject", function() return mt.header(conn, "Subject", SUBJECT or "miltertest") end},
    {"eoh", function() return mt.eoh(conn) end},
    {"body", function() return mt.bodystring(conn, "Hello from miltertest.\r\n") end},
    {"eom", function() return mt.eom(conn) end},
  }
  for _, s in ipairs(steps) do
    if C.reply(conn, s[1], s[2]()) ~= "SMFIR_CONTINUE" then break end
  end
  if REPLY_CODE ~= nil then
    C.check(conn, "smtpreply", MT_SMTPREPLY, REPLY_CODE, REPLY_ESC, REPLY_TEXT)
  end
  mt.disconnect(conn)
end)
