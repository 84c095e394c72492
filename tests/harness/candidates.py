"""What the candidate tests share: a `candidate` block, a local time for `handover --at`,
a supervisor's acquisitions (its /metrics), `status` read by the CLI, and the wait for
the members a host sees."""

from __future__ import annotations

import json
import urllib.request
from datetime import datetime, timedelta

from tests.harness.cli import run_cli
from tests.harness.host import Host
from tests.harness.proc import wait_until


def candidate(priority: int = 0, nofailover: bool = False) -> str:
    return f"candidate {{ priority = {priority}, nofailover = {str(nofailover).lower()} }}\n"


def acquisitions_sent(host: Host) -> float:
    """How many acquire statements `host`'s supervisor sent (its /metrics)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{host.health_port()}/metrics",
                                timeout=5) as r:
        text = r.read().decode()
    for line in text.splitlines():
        if line.startswith('corda_ha_db_statements_total{op="acquire"}'):
            return float(line.split()[-1])
    return 0.0


def status_json(host: Host) -> dict[str, object]:
    out = run_cli("status", "--json", "--config", str(host.config_path))
    assert out.returncode in (0, 3), out
    result: dict[str, object] = json.loads(out.stdout)
    return result


def status_text(host: Host) -> str:
    out = run_cli("status", "--config", str(host.config_path))
    assert out.returncode in (0, 3), out
    return out.stdout


def members_seen(host: Host, names: set[str]) -> None:
    """Wait until `names` are fresh members, as the CLI reads them."""
    def there() -> bool:
        members = status_json(host)["members"]
        assert isinstance(members, list)
        return names <= {m["machine_name"] for m in members if m["fresh"]}
    wait_until(there, 20, interval=0.2, message=f"members {names}")


def local_iso(seconds_from_now: float) -> tuple[str, float]:
    """A local time (no offset) `seconds_from_now` ahead, and it as POSIX seconds."""
    moment = datetime.now() + timedelta(seconds=seconds_from_now)
    return moment.isoformat(timespec="milliseconds"), moment.timestamp()
