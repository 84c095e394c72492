"""The chaos profiles' derived intervals are the supervisor's own (no drift)."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.config import load_config
from supervisor.core import Timing
from tests.chaos.profile import PROFILES, Profile, profile
from tests.chaos.runner import edit_config
from tests.harness.host import Host


def supervisor_timing(p: Profile, root: Path) -> Timing:
    """The Timing a chaos host's supervisor derives from the config it is given."""
    host = Host(name="a", root=root, dsn="postgresql://postgres@127.0.0.1:1/postgres",
                lease_name="chaos", tag="t", update_ms=p.update_ms, wait_ms=p.wait_ms,
                stop_ms=p.stop_ms)
    host.write_config()
    text = edit_config(host.config_path.read_text(), ["/bin/true"], p)
    host.config_path.write_text(text)
    return Timing.from_config(load_config(str(host.config_path)))


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_profile_matches_the_supervisor(tmp_path: Path, name: str) -> None:
    p = profile(name)
    t = supervisor_timing(p, tmp_path)
    assert (t.update_interval, t.wait_interval, t.stop_timeout) == (p.U, p.W, p.S)
    assert t.margin == pytest.approx(p.M)
    assert t.operation_timeout == pytest.approx(p.operation_timeout)
    assert t.loss_grace == pytest.approx(p.G)
    assert t.poll_interval == pytest.approx(p.poll)
    assert t.renew_hedge == pytest.approx(p.hedge)


def test_corda_profile_is_cordas_ratio_with_a_long_stop_timeout() -> None:
    p = profile("corda")
    assert p.W / p.U == 40000 / 20000
    figures = [p.U, p.W, p.S, p.M]
    assert figures == pytest.approx([2.0, 4.0, 3.0, 0.4])
    # a lost lease gives G = W - M - U - R < S; SIGTERM at t + 2.8 s, SIGKILL at t + 3.6 s
    figures = [p.G, p.term_after, p.kill_after]
    assert figures == pytest.approx([0.8, 2.8, 3.6])
    assert 0 < p.short_cut_max < p.keep_slack


def test_lab_profile_is_the_suites_intervals() -> None:
    p = profile("lab")
    figures = [p.U, p.W, p.S, p.M, p.G]
    assert figures == pytest.approx([0.5, 2.0, 0.5, 0.2, 0.5])
    assert p.keep_slack == pytest.approx(0.8)  # the old fixed SLACK = W - U - S - M


def test_unknown_profile() -> None:
    with pytest.raises(ValueError, match="unknown profile"):
        profile("prod")
