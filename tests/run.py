#!/usr/bin/python3
"""tests/run.py - runs the integration and fault suites.

  tests/run.py integration fault      run those directories' test_*.py
  tests/run.py tests/integration/test_api.py   run one file
  tests/run.py fault.test_crashes.FaultTest.test_09   run one test (a dotted name)

Every test drives the real daemons (from $DTX_BIN, default bin/) over HTTP
against real PostgreSQL servers started by tools/dtx_cluster.py. When a
test fails, the tail of each daemon's log is printed.
"""

import os
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tools"))
sys.path.insert(0, HERE)


def load(targets):
    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    for t in targets:
        path = t if os.path.exists(t) else os.path.join(HERE, t)
        if not os.path.exists(path) and "/" not in t:
            suite.addTests(loader.loadTestsFromName(t))
        elif os.path.isdir(path):
            suite.addTests(loader.discover(path, pattern="test_*.py", top_level_dir=HERE))
        else:
            rel = os.path.relpath(path, HERE)[:-3].replace(os.sep, ".")
            suite.addTests(loader.loadTestsFromName(rel))
    return suite


def main():
    targets = sys.argv[1:] or ["integration", "fault"]
    start = time.time()
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(load(targets))
    took = time.time() - start
    print("\n%s: %d tests, %d failures, %d errors, %d skipped in %.1f s" %
          (" ".join(targets), result.testsRun, len(result.failures), len(result.errors),
           len(result.skipped), took))
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
