#!/usr/bin/python3
"""pyfilter.py - milterkit's reference filter on pymilter (Debian's python3-milter, a Python
binding of Sendmail's libmilter; nobody on the team wrote either). It behaves like
scripts/peers/libmilter-filter/testfilter.c, with its own texts and header name:

  MAIL FROM <early-reject@...>  -> 550 5.7.1 sender refused by pymilter pyfilter (at MAIL)
  at end of message, by Subject keyword:
    REJECTME     -> 550 5.7.1 Message rejected by pymilter pyfilter (REJECTME)
    TEMPFAILME   -> 451 4.7.1 Try again later (TEMPFAILME)
    DISCARDME    -> discard
    QUARANTINEME -> quarantine "QUARANTINEME seen by pymilter pyfilter", accepted
    MODIFYME     -> Subject changed to "MODIFIED by pymilter pyfilter",
                    X-Pymilter-First inserted at index 0, first X-Delete-Me deleted,
                    <added@example.test> added, <added-par@example.test> added with
                    NOTIFY=NEVER, <removed@example.test> deleted, sender changed to
                    <changed-from@example.test>, body replaced by BODY_REPLACEMENT
  every message not rejected, tempfailed or discarded gets "X-Pymilter-Test: yes".

Usage: /usr/bin/python3 pyfilter.py inet:PORT@127.0.0.1
(Debian's interpreter on purpose: the module is installed for /usr/bin/python3 only.)
"""
import sys

import Milter

BODY_REPLACEMENT = b"This body was replaced by the pymilter pyfilter.\r\n"
KEYWORDS = ("REJECTME", "TEMPFAILME", "DISCARDME", "QUARANTINEME", "MODIFYME")


class PyFilter(Milter.Base):
    def __init__(self):
        self.id = Milter.uniqueID()
        self.flags = set()

    def log(self, *args):
        print("pyfilter[%d]:" % self.id, *args, file=sys.stderr, flush=True)

    def connect(self, hostname, family, hostaddr):
        self.log("connect", hostname, hostaddr)
        return Milter.CONTINUE

    def hello(self, heloname):
        self.log("helo", heloname)
        return Milter.CONTINUE

    def envfrom(self, mailfrom, *params):
        self.flags = set()  # a new transaction on the same connection
        self.log("envfrom", mailfrom, params)
        if mailfrom.lower().startswith("<early-reject@"):
            self.setreply("550", "5.7.1", "sender refused by pymilter pyfilter")
            return Milter.REJECT
        return Milter.CONTINUE

    def envrcpt(self, to, *params):
        self.log("envrcpt", to, params)
        return Milter.CONTINUE

    def header(self, name, value):
        self.log("header", name, value)
        if name.lower() == "subject":
            self.flags.update(word for word in KEYWORDS if word in value)
        return Milter.CONTINUE

    def eoh(self):
        self.log("eoh")
        return Milter.CONTINUE

    def body(self, chunk):
        self.log("body", len(chunk), "bytes")
        return Milter.CONTINUE

    def eom(self):
        self.log("eom", sorted(self.flags))
        if "REJECTME" in self.flags:
            self.setreply("550", "5.7.1", "Message rejected by pymilter pyfilter (REJECTME)")
            return Milter.REJECT
        if "TEMPFAILME" in self.flags:
            self.setreply("451", "4.7.1", "Try again later (TEMPFAILME)")
            return Milter.TEMPFAIL
        if "DISCARDME" in self.flags:
            return Milter.DISCARD
        self.addheader("X-Pymilter-Test", "yes")
        if "MODIFYME" in self.flags:
            self.chgheader("Subject", 1, "MODIFIED by pymilter pyfilter")
            self.addheader("X-Pymilter-First", "inserted at index 0", 0)
            self.chgheader("X-Delete-Me", 1, None)
            self.addrcpt("<added@example.test>")
            self.addrcpt("<added-par@example.test>", "NOTIFY=NEVER")
            self.delrcpt("<removed@example.test>")
            self.chgfrom("<changed-from@example.test>")
            self.replacebody(BODY_REPLACEMENT)
        if "QUARANTINEME" in self.flags:
            self.quarantine("QUARANTINEME seen by pymilter pyfilter")
        return Milter.CONTINUE

    def abort(self):
        self.log("abort")
        return Milter.CONTINUE

    def close(self):
        self.log("close")
        return Milter.CONTINUE


def main():
    sock = sys.argv[1] if len(sys.argv) > 1 else "inet:9998@127.0.0.1"
    Milter.factory = PyFilter
    Milter.set_flags(
        Milter.ADDHDRS | Milter.CHGHDRS | Milter.ADDRCPT | Milter.ADDRCPT_PAR | Milter.DELRCPT
        | Milter.CHGFROM | Milter.CHGBODY | Milter.QUARANTINE
    )
    print("pyfilter listening on", sock, "(pymilter %s)" % Milter.__version__,
          file=sys.stderr, flush=True)
    Milter.runmilter("pyfilter", sock, timeout=60)


if __name__ == "__main__":
    main()
