#!/usr/bin/python3
"""A no-op pymilter filter for benchmarks: every callback answers CONTINUE.

Usage: /usr/bin/python3 pymilter_noop.py PORT   (Debian's python3-milter)
"""
import sys
import Milter


class Noop(Milter.Base):
    def connect(self, *a): return Milter.CONTINUE
    def hello(self, *a): return Milter.CONTINUE
    def envfrom(self, *a): return Milter.CONTINUE
    def envrcpt(self, *a): return Milter.CONTINUE
    def header(self, *a): return Milter.CONTINUE
    def eoh(self): return Milter.CONTINUE
    def body(self, *a): return Milter.CONTINUE
    def eom(self): return Milter.CONTINUE
    def abort(self): return Milter.CONTINUE
    def close(self): return Milter.CONTINUE


if __name__ == "__main__":
    Milter.factory = Noop
    Milter.runmilter("pymilter-noop", "inet:%s@127.0.0.1" % sys.argv[1], 600)
