"""The test harness: everything the tests use that is not a test.

Imports nothing itself, so that the stand-in node (`fake_node.py`, run as a plain
script) stays light. docs/testing.md, "The harness", says which module owns what.
"""
