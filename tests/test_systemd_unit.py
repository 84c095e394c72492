"""systemd/corda-ha-supervisor.service: `systemd-analyze verify` and the settings that matter."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.harness.unitfile import EXPOSURE_AT_MOST, systemd_analyze

pytestmark = pytest.mark.timeout(60)

UNIT_NAME = "corda-ha-supervisor.service"
UNIT = Path(__file__).resolve().parent.parent / "systemd" / UNIT_NAME


# Findings about our unit that are expected on a build machine and say nothing
# about the unit itself.
HARMLESS = (
    re.compile(r"Command .* is not executable"),  # ExecStart binary not installed here
    re.compile(r"[Uu]ser .*corda.* (does not exist|not found)|Failed to resolve user"),
    re.compile(r"[Gg]roup .*corda.* (does not exist|not found)|Failed to resolve group"),
)


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> values (keys may repeat), ignoring comments."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"setting outside a section: {raw!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {raw!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def seconds(span: str) -> float:
    """A systemd time span ("120", "2min", "1min 30s", "500ms") in seconds."""
    units = {"": 1.0, "s": 1.0, "sec": 1.0, "ms": 0.001, "m": 60.0, "min": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", span)
    assert parts, span
    return sum(float(n) * units[u] for n, u in parts)


def verify(unit_text: str, tmp_path: Path) -> list[str]:
    """Run `systemd-analyze verify` on `unit_text`; return the findings that are not harmless."""
    analyze = systemd_analyze("the unit file is checked with `systemd-analyze verify`")
    path = tmp_path / UNIT_NAME
    path.write_text(unit_text)
    proc = subprocess.run(
        [analyze, "verify", "--man=no", str(path)],
        capture_output=True, text=True, timeout=45,
    )
    problems = []
    for line in (proc.stdout + proc.stderr).splitlines():
        # Lines about other units on this host (dependencies pulled in by
        # After=/WantedBy=) are not about ours.
        if UNIT_NAME not in line and str(path) not in line:
            continue
        if any(p.search(line) for p in HARMLESS):
            continue
        problems.append(line)
    if proc.returncode != 0 and not problems:
        problems.append(f"systemd-analyze verify exited {proc.returncode}: {proc.stderr.strip()}")
    return problems


def installable_copy() -> str:
    """The unit with ExecStart pointed at a binary that exists here."""
    text = UNIT.read_text()
    new, count = re.subn(r"(?m)^ExecStart=\S+", "ExecStart=/bin/true", text)
    assert count == 1
    return new


def test_unit_verifies_clean(tmp_path: Path) -> None:
    assert verify(installable_copy(), tmp_path) == []


def test_verify_catches_real_errors(tmp_path: Path) -> None:
    """Guard against a vacuous pass: broken settings must be reported."""
    text = installable_copy()
    broken = text.replace("KillMode=mixed", "KillMode=mixd").replace(
        "[Service]\n", "[Service]\nWatchdogSecs=30\n", 1)
    problems = verify(broken, tmp_path)
    assert any("mixd" in p for p in problems), problems
    assert any("WatchdogSecs" in p for p in problems), problems


def test_key_settings() -> None:
    unit = parse_unit(UNIT.read_text())
    svc, u = unit["Service"], unit["Unit"]

    def one(section: dict[str, list[str]], key: str) -> str:
        values = section.get(key, [])
        assert len(values) == 1, f"{key}: {values}"
        return values[0]

    assert one(svc, "Type") == "notify"
    assert one(svc, "NotifyAccess") == "main"
    assert one(svc, "KillMode") == "mixed"
    assert one(svc, "KillSignal") == "SIGTERM"
    assert 10 <= seconds(one(svc, "WatchdogSec")) <= 300
    assert seconds(one(svc, "TimeoutStopSec")) > 60
    assert one(svc, "Restart") == "always"
    assert seconds(one(svc, "RestartSec")) > 0
    assert "78" in one(svc, "RestartPreventExitStatus").split()
    assert one(svc, "User") == "corda"
    assert one(svc, "Group") == "corda"
    assert one(svc, "WorkingDirectory")
    assert one(svc, "LimitNOFILE") == "65536"
    assert one(svc, "ExecStart") == (
        "/opt/corda-ha-supervisor/venv/bin/corda-ha-supervisor run"
        " --config /etc/corda-ha-supervisor/supervisor.conf")
    assert "-/etc/corda-ha-supervisor/env" in svc["EnvironmentFile"]
    assert "network-online.target" in one(u, "After").split()
    assert "network-online.target" in one(u, "Wants").split()
    assert int(one(u, "StartLimitBurst")) > 0
    assert seconds(one(u, "StartLimitIntervalSec")) > 0
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_hardening_a_jvm_tolerates() -> None:
    svc = parse_unit(UNIT.read_text())["Service"]
    for key in ["NoNewPrivileges", "PrivateTmp", "PrivateDevices", "PrivateMounts",
                "ProtectHome", "ProtectKernelTunables", "ProtectKernelModules",
                "ProtectKernelLogs", "ProtectClock", "ProtectHostname", "RestrictSUIDSGID",
                "LockPersonality", "RestrictRealtime", "RestrictNamespaces", "RemoveIPC"]:
        assert svc.get(key) == ["yes"], key
    assert svc["SystemCallArchitectures"] == ["native"]
    assert svc["ProtectSystem"] == ["strict"]
    assert any(p.lstrip("-") == "/opt/corda" for p in svc.get("ReadWritePaths", []))
    assert svc["CapabilityBoundingSet"] == [""] and svc["AmbientCapabilities"] == [""]
    assert svc["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]
    assert svc["SystemCallErrorNumber"] == ["EPERM"]  # a stray call fails, never kills
    assert svc["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert svc["ProtectProc"] == ["invisible"]
    # The boot id (/proc/sys/kernel/random/boot_id) and psutil's boot time (/proc/stat)
    # are outside ProcSubset=pid.
    assert svc["ProcSubset"] == ["all"]
    # W^X breaks the JVM's JIT compiler.
    assert "MemoryDenyWriteExecute" not in svc


# `systemd-analyze security --offline`: each exposure left with the word its comment in
# the unit uses (the overall figure: `EXPOSURE_AT_MOST`).
JUSTIFIED = {
    "PrivateNetwork=": "PrivateNetwork", "IPAddressDeny=": "IPAddressDeny",
    "RestrictAddressFamilies=~AF_(INET|INET6)": "Internet sockets",
    "RestrictAddressFamilies=~AF_UNIX": "Unix sockets",
    "ProtectControlGroups=": "ProtectControlGroups", "Delegate=": "Delegate=yes",
    "MemoryDenyWriteExecute=": "MemoryDenyWriteExecute", "PrivateUsers=": "PrivateUsers",
    "ProcSubset=": "ProcSubset", "RootDirectory=/RootImage=": "RootDirectory",
    "DeviceAllow=": "DeviceAllow", "UMask=": "Group-readable",
}


def security(*args: str) -> str:
    """`systemd-analyze security --offline=yes ARGS UNIT` (stdout)."""
    analyze = systemd_analyze("the exposure figure is `systemd-analyze security`'s")
    proc = subprocess.run([analyze, "security", "--offline=yes", *args, str(UNIT)],
                          capture_output=True, text=True, timeout=45)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_exposure_figure_stays_low() -> None:
    text = security()
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", text)
    assert found, text[-500:]
    figure = float(found.group(1))
    print(f"systemd-analyze security --offline: {figure} {found.group(2)}")
    assert figure <= EXPOSURE_AT_MOST, text


def test_every_exposure_left_is_a_justified_one() -> None:
    """A new exposure (a setting dropped, or one that systemd newly scores) fails here,
    so that it gets a comment in the unit and a line in JUSTIFIED, or a fix."""
    items = json.loads(security("--json=short"))
    left = {item["name"] for item in items if not item["set"] and item["exposure"]}
    print(f"exposures left: {sorted(left)}")
    assert left <= set(JUSTIFIED), sorted(left - set(JUSTIFIED))
    comments = "\n".join(line for line in UNIT.read_text().splitlines()
                         if line.startswith("#"))
    for name in left:
        assert JUSTIFIED[name] in comments, f"{name}: no comment says why"


def test_node_cgroups_are_delegated() -> None:
    """Each node run gets its own child cgroup (killed with cgroup.kill): the unit
    must delegate its cgroup and leave /sys/fs/cgroup writable; KillMode=mixed
    SIGKILLs the child cgroups too when the supervisor dies."""
    svc = parse_unit(UNIT.read_text())["Service"]
    assert svc.get("Delegate") == ["yes"]
    assert svc.get("ProtectControlGroups") == ["no"]
    assert svc.get("KillMode") == ["mixed"]


def test_the_header_says_what_the_installer_does() -> None:
    """The unit's opening comment describes systemd/install.sh as it is: the user comes
    from a drop-in, the unit is enabled but not started, a corda.service is left alone
    unless taken over."""
    header = UNIT.read_text().split("\n[Unit]", 1)[0]
    installer = (UNIT.parent / "install.sh").read_text()
    assert "enable --now corda-ha-supervisor" not in header  # the installer starts nothing
    assert "does not start it" in header
    for word in ("corda-ha-supervisor.service.d/user.conf", "--take-over-corda-service",
                 "daemon-reload"):
        assert word in header and word in installer, word
