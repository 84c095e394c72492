"""What the unit-file tests and the install tests share: `systemd-analyze` (or a skip
saying why it is needed) and the exposure figure the shipped unit must reach."""

from __future__ import annotations

from tests.harness import needs

#: `systemd-analyze security --offline`'s overall figure for the unit, at most
#: (systemd 252; 6.8 before the hardening)
EXPOSURE_AT_MOST = 1.5


def systemd_analyze(why: str) -> str:
    """systemd-analyze's path; skips the test (package: systemd) when it does not run."""
    return needs.program("systemd-analyze", why)
