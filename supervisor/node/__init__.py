"""The node side: this host's Corda node and the processes around it.

Owns: the node's process handle (`process`), the guard that holds its kill deadline
(`guard`, started as `python -m supervisor.node.guard`) and the pipe protocol both
sides speak (`guardproto`), this process's own fence of the guard (`guardfence`: the
direct kill, the acknowledgements), the run's cgroup (`cgroup`), the node key and the
sweeps that end a run and find leftovers (`sweep`), readiness (`readiness`), the shared
directories probe (`shareddirs`), operator hooks (`hooks`), blocking work in
threads (`threads`), pipe plumbing (`pipes`), the one-supervisor-per-node lock
(`instancelock`) and this machine's identity and process liveness (`machine`).

May import: the stdlib, psutil, structlog, `supervisor.clock`, `supervisor.config`
and `supervisor.core` (values only). Never `lease`, `observe`, `daemon` or `cli`. The
guard and `cgroup` import nothing of ours but `clock`, `cgroup` and `guardproto`.
"""
