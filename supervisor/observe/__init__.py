"""What the operator sees: the HTTP endpoints and their bounded server (`http`,
`server`), the Prometheus metrics (`metrics`), structured logs through a
non-blocking queue (`logs`; `logfields`: the redaction and rounding every record
passes) and sd_notify for systemd (`sdnotify`).

May import: the stdlib, structlog, prometheus_client, `supervisor.clock`. Never the
lease, the node, the daemon or the command line: they hand it plain values.
"""
