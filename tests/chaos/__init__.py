"""Chaos suite (issue 3): a heartbeat-writing stand-in node and a checker.

- `tests/chaos/hb_node.py`: the stand-in Corda node, run as a plain script; it
  records when it ran in the table `chaos_heartbeat` (and optionally JSON lines).
- `tests/chaos/checker.py`: pure functions over those records: overlaps,
  availability, failover times, and the per-fault-type summary table.
"""
