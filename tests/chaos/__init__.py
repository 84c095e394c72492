"""Chaos suite: randomised fault episodes over real supervisors.

- `hb_node.py`: the stand-in Corda node, run as a plain script; it records when
  it ran (JSON lines, optionally the table `chaos_heartbeat`).
- `checker.py`: pure functions over those records: node runs, overlaps,
  availability, failover times, the per-fault-type summary table.
- `profile.py`: the timing profiles (`lab`, `corda`) and what they imply.
- `load.py`: the machine's load during a run, and the limits that follow it.
- `episode.py`: what a fault reports; `faults.py`, `faults_shape.py`: the faults.
- `analysis.py`: one episode's violations; `report.py`: tables, figures, JSON.
- `db.py`: primary + replica + proxies; `records.py`: reading the heartbeats live.
- `runner.py`: the cluster and the run; `__main__.py`: the long run;
  `test_chaos_short.py`: the short run in the test suite.
"""
