"""Where things are: the repository root (what every process the tests start gets as
`PYTHONPATH`, so that it imports this copy of `supervisor` and `tests`) and the one
stand-in node script. Derived from this file's own location, so that a scratch copy
of the repository (tests/mutants/runner.py) runs its own code."""

from __future__ import annotations

from pathlib import Path

HARNESS = Path(__file__).resolve().parent
#: The repository root.
REPO = HARNESS.parent.parent
#: The stand-in node (tests/harness/fake_node.py), run as a plain script.
FAKE_NODE = str(HARNESS / "fake_node.py")
#: The JVM stand-in's source (tests/jvm/CordaStandIn.java).
JVM_SOURCE = REPO / "tests" / "jvm" / "CordaStandIn.java"
