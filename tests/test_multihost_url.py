"""A libpq multi-host URL whose first host never answers (blackholed through a fault
proxy: a partition, a powered-off machine), the writable server second, as the zone
partition on Patroni left it (tests/test_patroni_faults.py).

libpq spends the whole connect timeout on the silent host before it tries the next,
while a lease call is bounded by operationTimeout (shorter). Connecting has a budget
of its own (supervisor/lease/connects.py): an attempt outlives the call that gave up
on it and is lent to the next one. Each call keeps its own bound all the same.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from supervisor.config import DatabaseConfig
from supervisor.lease import LeaseUnavailable
from tests.harness.aio import run
from tests.harness.bounds import kill_within, within
from tests.harness.cluster import cluster
from tests.harness.faultproxy import FaultProxy
from tests.harness.leasedb import TO, closing, store
from tests.harness.loadprobe import LoadWatch
from tests.harness.pgserver import PgServer

pytestmark = pytest.mark.timeout(60)


def silent_first(pg_server: PgServer, silent: FaultProxy) -> str:
    """The server's conninfo as a multi-host URL: the silent proxy first, then the server."""
    params = conninfo_to_dict(pg_server.dsn)
    params.pop("hostaddr", None)
    params.update(host=f"127.0.0.1,{pg_server.host}", port=f"{silent.port},{pg_server.port}",
                  target_session_attrs="read-write")
    return make_conninfo("", **params)


def test_a_silent_first_host_costs_the_calls_of_one_connect_timeout_not_every_call(
        db_config: DatabaseConfig, pg_server: PgServer, proxies: Callable[[], FaultProxy],
        load: LoadWatch) -> None:
    """Lease calls bounded at 0.5 s, libpq's connect timeout 2 s: the calls of the first
    connect timeout fail, each within its bound; then one reaches the second host, and
    the lease is acquired and renewed on it."""
    silent = proxies()
    silent.set_mode("blackhole")
    db = dataclasses.replace(db_config, conninfo=silent_first(pg_server, silent))
    bound, connect_timeout = 0.5, 2.0

    async def main() -> None:
        plain, a = store(db_config), store(db, w=30)
        try:
            await plain.ensure_schema(TO)
            t0 = time.monotonic()
            failed, give_up = 0, t0 + connect_timeout + within(3.0, load, floor=3.0)
            while True:
                started = time.monotonic()
                try:
                    await a.observe(bound)
                    break
                except LeaseUnavailable:
                    failed += 1
                took = time.monotonic() - started
                assert took < kill_within(bound, load, floor=0.2), \
                    f"a call took {took:.3f} s, bound {bound} s"
                assert time.monotonic() < give_up, \
                    f"{failed} calls failed; the second host never answered"
            reached = time.monotonic() - t0
            print(f"\nfirst answer after {reached:.2f} s, {failed} failed calls")
            assert failed >= 1 and reached >= connect_timeout - 0.1, \
                "the first host answered: no test"
            epoch = await a.acquire(None, timeout=bound)
            assert epoch is not None
            assert await a.renew(epoch, bound) is not None
        finally:
            await closing([plain, a])

    run(main())


def test_a_silent_first_host_of_the_url_does_not_keep_the_node_from_starting(
        tmp_path: Path, lease_name: str, pg_server: PgServer, proxies: Callable[[], FaultProxy],
        load: LoadWatch) -> None:
    """The supervisor with such a URL starts its node (its operationTimeout 0.4 s,
    connectTimeout 2 s)."""
    silent = proxies()
    silent.set_mode("blackhole")
    with cluster(tmp_path, pg_server.dsn, lease_name) as pair:
        a = pair.add("a", None, dsn=silent_first(pg_server, silent))
        a.start()
        # two connect timeouts (2 s) and W (2 s): far more than the rules need
        a.wait_node_up(within(2 * 2.0 + 2.0, load, floor=10.0))
