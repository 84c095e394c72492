"""Which scenario (`sqlcases.SCENARIOS`) kills which generated SQL mutant (`sqlgen`).

`KILLS[statement][site][operator]` is the scenario in which that condition alone
decides; `EQUIVALENT` the mutants that no behaviour tells apart, with the reason.
`tests/test_sql_generated_mutants.py` fails when a generated mutant has neither, or
when an entry here names a mutant the generator no longer makes.
"""

from __future__ import annotations

OLD_NULL = ("old", "null")


def _both(scenario: str, *columns: str,
          ops: tuple[str, ...] = OLD_NULL) -> dict[str, dict[str, str]]:
    """`SET column` mutants (its old value, NULL) all killed by one scenario."""
    return {f"SET {c}": dict.fromkeys(ops, scenario) for c in columns}


def _values(scenario: str, *columns: str) -> dict[str, dict[str, str]]:
    """`VALUES column` mutants (NULL in a new row) all killed by one scenario."""
    return {f"VALUES {c}": {"null": scenario} for c in columns}


_CLOCK_AND_BOUNDS = ("clock -1s", "clock +1s")

KILLS: dict[str, dict[str, dict[str, str]]] = {
    "SERVER_ID": {
        "pg_is_in_recovery()": {"true": "obs-live", "not": "obs-live"},
    },
    "observe": {
        "l.lease_name = %(name)s": {"true": "obs-other-lease-first",
                                     "op <>": "obs-other-lease-first"},
        "l.lease_name IS NOT NULL": {"true": "obs-none", "op IS NULL": "obs-none"},
        "l.holder IS NOT NULL": {"true": "obs-free-long-ago", "op IS NULL": "obs-expired"},
        "n.now > l.expires_at": {
            "true": "obs-held-expires-later", "op >=": "obs-held-expires-now",
            "op <": "obs-expired", "clock -1s": "obs-held-expired-0.5s",
            "clock +1s": "obs-held-expires-in-0.5s"},
        "n.now > l.renewed_at + %(w)s": {
            "true": "obs-held-renewed-0.5w-ago", "op >=": "obs-held-renewed-w-ago",
            "op <": "obs-expired", "clock -1s": "obs-held-renewed-w+0.5s-ago",
            "clock +1s": "obs-held-renewed-w-0.5s-ago", "bound x2": "obs-expired",
            "bound dropped": "obs-held-renewed-0.5w-ago"},
        "l.paused_at IS NOT NULL": {"true": "obs-live", "op IS NULL": "obs-paused"},
        "l.holder IS NULL": {"true": "obs-held-asked-to-node-c", "op IS NOT NULL": "obs-reserved"},
        "n.now < l.expires_at + 2 * %(w)s": {
            "true": "obs-reserved-long-ago", "op <=": "obs-reserved-2w-ago",
            "op >": "obs-reserved", "clock -1s": "obs-reserved-just-over-2w",
            "clock +1s": "obs-reserved-just-under-2w", "bound x2": "obs-reserved-long-ago",
            "bound /2": "obs-reserved-1.5w-ago", "bound dropped": "obs-reserved"},
    },
    "acquire": {
        "%(has_expected)s": {"true": "acq-free-no-expected", "not": "acq-free"},
        "l.paused_at IS NULL": {"true": "acq-free-paused", "op IS NOT NULL": "acq-free"},
        "l.handover_to IS NULL": {"true": "acq-reserved-other", "false": "acq-free",
                                  "op IS NOT NULL": "acq-free"},
        "l.handover_to = %(holder)s": {"true": "acq-reserved-other", "false": "acq-reserved-me",
                                       "op <>": "acq-reserved-me"},
        "l.holder IS NOT NULL": {"true": "acq-reserved-other",
                                 "false": "acq-expired-held-reserved",
                                 "op IS NULL": "acq-reserved-other"},
        "clock_timestamp() >= l.expires_at + 2 * %(w)s": {
            "true": "acq-reserved-other", "false": "acq-reserved-other-long-ago",
            "op >": "acq-reserved-other-2w-ago", "op <": "acq-reserved-other-long-ago",
            "clock -1s": "acq-reserved-other-2w-ago",
            "clock +1s": "acq-reserved-other-just-under-2w",
            "bound x2": "acq-reserved-other-long-ago", "bound /2": "acq-reserved-other-1.5w-ago",
            "bound dropped": "acq-reserved-other"},
        "l.epoch = %(e_epoch)s": {"true": "acq-free-stale-epoch", "op <>": "acq-free"},
        "l.instance IS NOT DISTINCT FROM %(e_instance)s::text": {
            "true": "acq-expired-other-instance", "op IS DISTINCT FROM": "acq-expired"},
        "l.renewed_at IS NOT DISTINCT FROM %(e_renewed)s::timestamptz": {
            "true": "acq-expired-other-renewal", "op IS DISTINCT FROM": "acq-expired"},
        "l.holder IS NULL": {"true": "acq-live", "false": "acq-free", "op IS NOT NULL": "acq-free"},
        "(clock_timestamp() > l.expires_at AND clock_timestamp() > l.renewed_at + %(w)s)": {
            "false": "acq-expired"},
        "clock_timestamp() > l.expires_at": {
            "true": "acq-held-expires-later", "op >=": "acq-held-expires-now",
            "op <": "acq-expired", "clock -1s": "acq-held-expired-0.5s",
            "clock +1s": "acq-held-expires-in-0.5s"},
        "clock_timestamp() > l.renewed_at + %(w)s": {
            "true": "acq-held-renewed-0.5w-ago", "op >=": "acq-held-renewed-w-ago",
            "op <": "acq-expired", "clock -1s": "acq-held-renewed-w+0.5s-ago",
            "clock +1s": "acq-held-renewed-w-0.5s-ago", "bound x2": "acq-expired",
            "bound dropped": "acq-held-renewed-0.5w-ago"},
        "(%(dead_pid)s::integer IS NOT NULL AND l.holder = %(holder)s AND l.holder_machine = "
        "%(machine)s AND l.holder_pid = %(dead_pid)s::integer AND l.holder_started IS NOT "
        "DISTINCT FROM %(dead_started)s::bigint)": {"false": "acq-reclaim"},
        "%(dead_pid)s::integer IS NOT NULL": {"op IS NULL": "acq-reclaim"},
        "l.holder = %(holder)s": {"true": "acq-reclaim-other-name", "op <>": "acq-reclaim"},
        "l.holder_machine = %(machine)s": {"true": "acq-reclaim-other-machine",
                                           "op <>": "acq-reclaim"},
        "l.holder_pid = %(dead_pid)s::integer": {"true": "acq-reclaim-other-pid",
                                                 "op <>": "acq-reclaim"},
        "l.holder_started IS NOT DISTINCT FROM %(dead_started)s::bigint": {
            "true": "acq-reclaim-other-start", "op IS DISTINCT FROM": "acq-reclaim"},
        **_values("acq-insert", "lease_name", "holder", "holder_host", "holder_pid",
                  "holder_machine", "holder_started", "instance", "epoch", "acquired_at",
                  "renewed_at", "server_id"),
        "VALUES expires_at": dict.fromkeys(("null", "bound x2", "bound dropped"), "acq-insert"),
        **_both("acq-expired-asked", "holder", "holder_host", "holder_pid", "holder_machine",
                "holder_started", "instance", "epoch", "acquired_at", "renewed_at",
                "expires_at", "server_id"),
        **_both("acq-expired-asked", "handover_requested_at", "handover_to", ops=("old",)),
        "%(server)s::text IS NULL": {"true": "acq-insert-other-server",
                                     "false": "acq-insert-any-server",
                                     "op IS NOT NULL": "acq-insert-any-server"},
        "{server} = %(server)s::text": {"true": "acq-insert-other-server",
                                        "false": "acq-insert", "op <>": "acq-insert"},
    },
    "renew": {
        "l.lease_name = %(name)s": {"true": "renew-twin-lease", "op <>": "renew-twin-lease"},
        "l.instance = %(instance)s": {"true": "renew-other-instance", "op <>": "renew"},
        "l.epoch = %(epoch)s": {"true": "renew-old-epoch", "op <>": "renew"},
        "l.expires_at > n.now": {"true": "renew-expired", "op >=": "renew-expires-now",
                                 "op <": "renew", "clock -1s": "renew-expired-0.5s",
                                 "clock +1s": "renew-expires-in-0.5s"},
        "l.handover_requested_at IS NOT NULL": {"true": "renew", "op IS NULL": "renew"},
        "l.paused_at IS NOT NULL": {"true": "renew", "op IS NULL": "renew"},
        **_both("renew", "renewed_at", "server_id"),
        "SET expires_at": dict.fromkeys(("old", "null", "bound x2", "bound dropped"), "renew"),
    },
    "release": {
        "lease_name = %(name)s": {"true": "release-twin-lease", "op <>": "release"},
        "instance = %(instance)s": {"true": "release-other-instance", "op <>": "release"},
        "epoch = %(epoch)s": {"true": "release-old-epoch", "op <>": "release"},
        **_both("release", "holder", "holder_host", "holder_pid", "holder_machine",
                "holder_started", "instance", ops=("old",)),
        **_both("release", "expires_at", "server_id"),
    },
    "request_handover": {
        "lease_name = %(name)s": {"true": "handover-other-lease", "op <>": "handover"},
        "holder IS NOT NULL": {"true": "handover-free", "op IS NULL": "handover"},
        "SET handover_requested_at": {"old": "handover", "null": "handover",
                                      "first dropped": "handover-again"},
        **_both("handover", "handover_to"),
    },
    "set_paused": {
        "VALUES paused_at: %(paused)s": {"true": "resume-before-run", "not": "pause-before-run"},
        "SET paused_at: %(paused)s": {"true": "resume", "not": "pause"},
        **_values("pause-before-run", "lease_name", "epoch", "paused_at"),
        "SET paused_at": {"old": "pause", "null": "pause", "first dropped": "pause-again"},
    },
    "record_acquired": {
        **_values("hist-acquired", "lease_name", "epoch", "holder", "holder_host", "how",
                  "previous_holder", "acquired_at"),
        "lease_name = %(name)s": {"true": "hist-acquired", "op <>": "hist-acquired"},
        "epoch < %(epoch)s": {"true": "hist-acquired-after-a-newer",
                              "op <=": "hist-acquired-twice", "op >": "hist-acquired"},
        "ended_at IS NULL": {"true": "hist-acquired", "op IS NOT NULL": "hist-acquired"},
        **_both("hist-acquired", "ended_at", "end_reason"),
    },
    "record_ended": {
        "lease_name = %(name)s": {"true": "hist-ended", "op <>": "hist-ended"},
        "epoch = %(epoch)s": {"true": "hist-ended-next-to-taken-over", "op <>": "hist-ended"},
        "ended_at IS NULL": {"true": "hist-ended-by-its-holder", "false": "hist-ended",
                             "op IS NOT NULL": "hist-ended"},
        "end_reason = 'taken over'": {"true": "hist-ended-by-its-holder",
                                      "false": "hist-ended-after-taken-over",
                                      "op <>": "hist-ended-after-taken-over"},
        "SET ended_at": {"old": "hist-ended", "null": "hist-ended",
                         "first dropped": "hist-ended-after-taken-over"},
        **_both("hist-ended", "end_reason"),
    },
    "read_history": {
        "lease_name = %(name)s": {"true": "hist-read", "op <>": "hist-read"},
    },
    "members.upsert": {
        **_values("mem-new", "lease_name", "instance", "machine_name", "machine_identity",
                  "host", "pid", "state", "can_take_over", "reason", "version", "started_at",
                  "last_seen", "priority", "nofailover", "update_interval_ms",
                  "wait_interval_ms", "margin_ms"),
        **_both("mem-refresh", "state", "can_take_over", "reason", "last_seen"),
        "lease_name = %(name)s": {"true": "mem-36-hours", "op <>": "mem-36-hours"},
        "instance <> %(instance)s": {"op =": "mem-predecessor"},
        "last_seen < clock_timestamp() - %(retention)s": {
            "true": "mem-refresh", "false": "mem-36-hours", "op <=": "mem-24-hours",
            "op >": "mem-36-hours", "clock -1s": "mem-24-hours-0.5s",
            "clock +1s": "mem-24-hours-less-0.5s", "bound x2": "mem-36-hours",
            "bound dropped": "mem-refresh"},
        "(machine_name = %(machine_name)s AND machine_identity = %(machine_identity)s AND "
        "last_seen < clock_timestamp() - %(fresh)s)": {"false": "mem-predecessor"},
        "machine_name = %(machine_name)s": {"true": "mem-same-machine-other-name",
                                            "op <>": "mem-predecessor"},
        "machine_identity = %(machine_identity)s": {"true": "mem-same-name-other-machine",
                                                    "op <>": "mem-predecessor"},
        "last_seen < clock_timestamp() - %(fresh)s": {
            "true": "mem-predecessor-fresh", "op <=": "mem-predecessor-6s",
            "op >": "mem-predecessor", "clock -1s": "mem-predecessor-6.5s",
            "clock +1s": "mem-predecessor-5.5s", "bound x2": "mem-predecessor",
            "bound dropped": "mem-predecessor-fresh"},
    },
    "members.select": {
        "lease_name = %(name)s": {"true": "mem-read", "op <>": "mem-read"},
    },
    "schedule.settle": {
        "lease_name = %(name)s": {"true": "sched-twin-lease", "op <>": "sched-settle"},
        "instance = %(instance)s": {"true": "sched-other-instance", "op <>": "sched-settle"},
        "epoch = %(epoch)s": {"true": "sched-old-epoch", "op <>": "sched-settle"},
        "handover_at <= clock_timestamp()": {
            "true": "sched-set-again-later", "op <": "sched-due-now", "op >": "sched-settle",
            "clock -1s": "sched-due-0.5s-ago", "clock +1s": "sched-due-in-0.5s"},
        "SET handover_requested_at: %(proceed)s": {"true": "sched-cancel",
                                                   "not": "sched-settle"},
        "SET handover_to: %(proceed)s": {"true": "sched-cancel-asked-before",
                                         "not": "sched-settle"},
        **_both("sched-settle", "handover_at", "handover_at_to", ops=("old",)),
        "SET handover_requested_at": {"old": "sched-settle", "null": "sched-settle",
                                      "first dropped": "sched-settle-asked-before"},
        **_both("sched-settle", "handover_to"),
    },
    "schedule.set": {
        "lease_name = %(name)s": {"true": "sched-set-other-lease", "op <>": "sched-set"},
        **_both("sched-set", "handover_at", "handover_at_to"),
    },
    "schedule.read": {
        "lease_name = %(name)s": {"true": "sched-read-other-lease-only", "op <>": "sched-read"},
    },
}

EQUIVALENT: dict[str, str] = {
    "members.upsert: instance <> %(instance)s [true]":
        "the only row of this lease with our instance is the one the same statement's "
        "INSERT ... ON CONFLICT writes, and PostgreSQL runs an unreferenced data-modifying "
        "WITH after the main query, whose DELETE skips a row the same command already wrote "
        "(scenario mem-own-row-stale: our own row, stale, survives either way). The "
        "condition stays: PostgreSQL does not promise which of two writes of one row in "
        "one statement wins",
    "acquire: %(dead_pid)s::integer IS NOT NULL [true]":
        "the same conjunction compares l.holder_pid = %(dead_pid)s::integer, which is NULL "
        "(never true) when dead_pid is NULL: the guard only says so explicitly",
}


def kills() -> dict[str, str]:
    """Mutant key -> scenario name, flattened."""
    return {f"{statement}: {site} [{op}]": scenario
            for statement, by_site in KILLS.items()
            for site, by_op in by_site.items()
            for op, scenario in by_op.items()}
