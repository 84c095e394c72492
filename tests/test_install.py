"""systemd/install.sh, run as docs/operations.md says, into scratch roots (`--root DIR`):

- the plan comes first (every step, every path with its owner and mode); `--dry-run`
  prints it and changes nothing; in a real run nothing (a file, a virtualenv, a systemctl
  call that changes something) happens before the plan is complete;
- files, owners and modes as the plan says; the config readable by the service's user,
  the env file not; the installed command works; the unit's Documentation= and every
  relative link of the installed README and docs resolve;
- a second run changes nothing the operator edited (supervisor.conf, env, the drop-in
  with the same user) and says so; another `--user` replaces the drop-in;
- a corda.service that runs or is enabled is never stopped or disabled, and the
  supervisor is not enabled beside it, unless `--take-over-corda-service` (then it is
  disabled and stopped, saying so); a fake `systemctl` on PATH records every call;
- the installed unit, with its drop-in, passes `systemd-analyze verify --root` (the
  ExecStart binary it names exists in the scratch root) and keeps its exposure figure.

Real runs need root (files owned by root and the service's group); the dry runs do not.
"""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness.unitfile import EXPOSURE_AT_MOST, systemd_analyze
from tests.harness.users import ensure_user

REPO = Path(__file__).resolve().parent.parent
INSTALL = REPO / "systemd" / "install.sh"
UNIT_NAME = "corda-ha-supervisor.service"
USER = "postgres"  # an unprivileged user this machine has (the test server runs as it)
PYTHON = shutil.which("python3") or sys.executable
#: systemctl verbs that change nothing
QUERIES = {"is-active", "is-enabled", "list-unit-files", "show", "status", "cat", "is-failed"}

pytestmark = pytest.mark.timeout(300)
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="a real install runs as root "
                                "(files owned by root and the service's group)")


def mode(path: Path) -> tuple[int, str, str]:
    st = path.stat()
    owner, group = pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name
    return stat.S_IMODE(st.st_mode), owner, group


def readable_by(user: str, path: Path) -> bool:
    return subprocess.run(["runuser", "-u", user, "--", "cat", str(path)],
                          capture_output=True).returncode == 0


def snapshot(root: Path,
             skip: str = "opt/corda-ha-supervisor/venv") -> dict[str, tuple[object, ...]]:
    """Every path under `root` (but the virtualenv): mode, owner, group, content digest."""
    found: dict[str, tuple[object, ...]] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if rel.startswith(skip):
            continue
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        found[rel] = (st.st_mode, st.st_uid, st.st_gid, digest)
    return found


def new_root() -> Path:
    """A scratch root other users may traverse (pytest's tmp_path is root-only)."""
    path = Path(tempfile.mkdtemp(prefix="corda-ha-install-"))
    os.chmod(path, 0o755)
    return path


@pytest.fixture
def scratch_root() -> Iterator[Path]:
    path = new_root()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def install(root: Path, *args: str, env: dict[str, str] | None = None,
            stdout: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`sh systemd/install.sh --root ROOT --python PYTHON ARGS`; output captured (stdout
    into the file `stdout` when given, so that a fake command can read it meanwhile)."""
    cmd = ["sh", str(INSTALL), "--root", str(root), "--python", PYTHON, *args]
    full_env = {**os.environ, **(env or {})}
    if stdout is None:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=280, env=full_env)
    with stdout.open("w") as out:
        done = subprocess.run(cmd, stdout=out, stderr=subprocess.PIPE, text=True,
                              timeout=280, env=full_env)
    return subprocess.CompletedProcess(cmd, done.returncode, stdout.read_text(), done.stderr)


def plan_of(output: str) -> str:
    """The plan: from the first line to "End of plan." included."""
    head, sep, _ = output.partition("End of plan.\n")
    assert sep, output
    return head + sep


def step_line(plan: str, needle: str) -> str:
    """The plan's step line that names `needle` (exactly one)."""
    lines = [line for line in plan.splitlines() if needle in line and re.match(r"\s+\d+\.", line)]
    assert len(lines) == 1, (needle, plan)
    return lines[0]


# ------------------------------------------------------------------ the plan, dry

def test_the_dry_run_prints_the_whole_plan_and_changes_nothing(scratch_root: Path) -> None:
    try:
        pwd.getpwnam(USER)
    except KeyError:
        pytest.skip(f"no {USER} user on this machine")
    group = grp.getgrgid(pwd.getpwnam(USER).pw_gid).gr_name
    done = install(scratch_root, "--no-systemctl", "--user", USER, "--dry-run")
    assert done.returncode == 0, done.stdout + done.stderr
    assert list(scratch_root.iterdir()) == []
    plan = plan_of(done.stdout)
    assert done.stdout[len(plan):].strip() == "Dry run (--dry-run): nothing was done."
    r = str(scratch_root)
    for needle, owner_mode in [
            (f"{r}/opt/corda-ha-supervisor:", "root:root 0755"),
            (f"{r}/opt/corda-ha-supervisor/venv ", "root:root"),
            (f"{r}/etc/corda-ha-supervisor:", f"root:{group} 0750"),
            (f"{r}/etc/corda-ha-supervisor/supervisor.conf:", f"root:{group} 0640"),
            (f"{r}/etc/corda-ha-supervisor/env:", "root:root 0600"),
            (f"{r}/etc/systemd/system/{UNIT_NAME}:", "root:root 0644"),
            (f"{r}/etc/systemd/system/{UNIT_NAME}.d/user.conf:", "root:root 0644"),
            (f"{r}/usr/share/doc/corda-ha-supervisor:", "root:root 0644")]:
        assert owner_mode in step_line(plan, needle), (needle, plan)
    assert f"User={USER} Group={group}" in step_line(plan, "user.conf")
    assert "--no-systemctl" in step_line(plan, "systemd:")


# ------------------------------------------------------------------ a real install

@dataclass(frozen=True)
class Installed:
    root: Path
    output: str
    group: str

    @property
    def etc(self) -> Path:
        return self.root / "etc" / "corda-ha-supervisor"

    @property
    def unit(self) -> Path:
        return self.root / "etc" / "systemd" / "system" / UNIT_NAME

    @property
    def dropin(self) -> Path:
        return self.unit.parent / f"{UNIT_NAME}.d" / "user.conf"

    @property
    def cli(self) -> Path:
        return self.root / "opt" / "corda-ha-supervisor" / "venv" / "bin" / "corda-ha-supervisor"


def install_for_test(root: Path, user: str = USER, *args: str) -> Installed:
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        pytest.skip(f"no {user} user on this machine")
    done = install(root, "--no-systemctl", "--user", user, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    return Installed(root, done.stdout, grp.getgrgid(entry.pw_gid).gr_name)


@pytest.fixture(scope="module")
def installed() -> Iterator[Installed]:
    """One install into a scratch root, shared by the tests that only read it."""
    if os.geteuid() != 0:
        pytest.skip("a real install runs as root")
    root = new_root()
    try:
        yield install_for_test(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@needs_root
def test_files_owners_and_modes_as_planned(installed: Installed) -> None:
    etc, group = installed.etc, installed.group
    assert mode(etc) == (0o750, "root", group)
    assert mode(etc / "supervisor.conf") == (0o640, "root", group)
    assert (etc / "supervisor.conf").read_bytes() == (REPO / "config/supervisor.conf").read_bytes()
    assert mode(etc / "env") == (0o600, "root", "root")
    assert (etc / "env").read_text() == ""
    assert mode(installed.unit) == (0o644, "root", "root")
    assert installed.unit.read_bytes() == (REPO / "systemd" / UNIT_NAME).read_bytes()
    assert mode(installed.dropin) == (0o644, "root", "root")
    dropin = [line for line in installed.dropin.read_text().splitlines()
              if not line.startswith("#")]
    assert dropin == ["[Service]", f"User={USER}", f"Group={group}"]
    assert mode(installed.root / "opt" / "corda-ha-supervisor") == (0o755, "root", "root")
    assert readable_by(USER, etc / "supervisor.conf")
    assert not readable_by(USER, etc / "env")
    assert "check-config" in installed.output
    # the plan was printed before the run, and the run did the plan's steps
    plan = plan_of(installed.output)
    total = len(re.findall(r"(?m)^\s+\d+\. ", plan))
    assert total >= 10 and f"[{total}/{total}] " in installed.output[len(plan):]


@needs_root
def test_the_installed_command_works(installed: Installed) -> None:
    assert mode(installed.cli)[0] & 0o555 == 0o555  # the service's user may run it
    check = subprocess.run([str(installed.cli), "check-config", "--offline", "--config",
                            str(installed.etc / "supervisor.conf")], capture_output=True,
                           text=True, timeout=60, env={**os.environ, "CORDA_HA_DB_PASSWORD": "pw"})
    assert check.returncode == 0, check.stderr


@needs_root
def test_the_documentation_links_resolve_where_installed(installed: Installed) -> None:
    doc = next(line.split("=", 1)[1] for line in installed.unit.read_text().splitlines()
               if line.startswith("Documentation="))
    assert doc.startswith("file:///")
    readme = installed.root / doc[len("file:///"):]
    assert readme.is_file() and readme.read_bytes() == (REPO / "README.md").read_bytes()
    docs = sorted(readme.parent.rglob("*.md"))
    assert {p.relative_to(readme.parent).as_posix() for p in docs} >= {
        "README.md", "docs/operations.md", "docs/design.md", "benchmarks/figures.md"}
    broken = []
    for page in docs:
        assert mode(page) == (0o644, "root", "root"), page
        for link in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in link and not (page.parent / link).exists():
                broken.append(f"{page.relative_to(readme.parent)}: {link}")
    assert broken == []


# ------------------------------------------------------------------ a second run

@needs_root
def test_a_second_run_keeps_what_the_operator_edited(scratch_root: Path) -> None:
    first = install_for_test(scratch_root)
    edited = {first.etc / "supervisor.conf": "# edited by the operator\n",
              first.etc / "env": "CORDA_HA_DB_PASSWORD=s3cret\n",
              first.dropin: first.dropin.read_text() + "# and this line\n"}
    for path, text in edited.items():
        path.write_text(text)
    os.chmod(first.etc / "supervisor.conf", 0o600)  # an operator's choice, kept (and warned)
    first.unit.write_text(first.unit.read_text() + "# a local edit, in the wrong place\n")
    before = snapshot(scratch_root)

    again = install_for_test(scratch_root)
    unit = str(first.unit.relative_to(scratch_root))
    after = snapshot(scratch_root)
    assert {k: v for k, v in after.items() if k != unit} == {
        k: v for k, v in before.items() if k != unit}
    for path, text in edited.items():
        assert path.read_text() == text
        assert f"{path}: exists" in step_line(plan_of(again.output), f"{path}:")
        assert str(path) in again.output.split("Left alone:", 1)[1]
    assert "left alone" in step_line(plan_of(again.output), f"{first.dropin}:")
    # the unit is the installer's own: replaced, saying so (local changes go in drop-ins)
    assert first.unit.read_bytes() == (REPO / "systemd" / UNIT_NAME).read_bytes()
    assert "replace" in step_line(plan_of(again.output), f"{first.unit}:")
    assert f"cannot read {first.etc / 'supervisor.conf'}" in again.output  # 0600: warned

    # no --user: the installed drop-in's user, so a plain rerun keeps it too
    dry = install(scratch_root, "--no-systemctl", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"user {USER} (the installed drop-in)" in dry.stdout
    assert "left alone" in step_line(dry.stdout, f"{first.dropin}:")

    # another user: the drop-in is replaced, saying what it said
    other = ensure_user()
    other_group = grp.getgrgid(other.gid).gr_name
    moved = install_for_test(scratch_root, other.name)
    assert f"replace (it says User={USER} Group={first.group})" in moved.output
    assert [line for line in first.dropin.read_text().splitlines()
            if not line.startswith("#")] == ["[Service]", f"User={other.name}",
                                             f"Group={other_group}"]
    assert (first.etc / "supervisor.conf").read_text() == edited[first.etc / "supervisor.conf"]
    assert f"{other.name}:{other_group} cannot enter {first.etc}" in moved.output


# ------------------------------------------------------------------ corda.service

FAKE_SYSTEMCTL = r"""#!/bin/sh
# A fake systemctl: records each call (with whether the installer's plan was complete
# and whether any file of the install existed yet) and answers for corda.service as
# FAKE_CORDA_ACTIVE / FAKE_CORDA_ENABLED say ("" for enabled: no such unit).
verb= unit=
for a in "$@"; do
    case $a in -*) ;; *) if [ -z "$verb" ]; then verb=$a; else unit=$a; fi ;; esac
done
plan=$(grep -c '^End of plan' "$FAKE_OUT" 2>/dev/null) || true
[ -e "$FAKE_ROOT/opt" ] && files=yes || files=no
printf 'systemctl\t%s\t%s\t%s\n' "$*" "${plan:-0}" "$files" >>"$FAKE_LOG"
case $verb:$unit in
    is-active:corda.service) echo "$FAKE_CORDA_ACTIVE"
        [ "$FAKE_CORDA_ACTIVE" = active ]; exit ;;
    is-enabled:corda.service)
        if [ -z "$FAKE_CORDA_ENABLED" ]; then
            echo "Failed to get unit file state for corda.service: No such file" >&2; exit 1
        fi
        echo "$FAKE_CORDA_ENABLED"; [ "$FAKE_CORDA_ENABLED" = enabled ]; exit ;;
    list-unit-files:corda.service)
        [ -n "$FAKE_CORDA_ENABLED" ] || exit 1
        echo "corda.service $FAKE_CORDA_ENABLED enabled"; exit 0 ;;
    is-active:*) echo inactive; exit 3 ;;
    is-enabled:*) echo disabled; exit 1 ;;
esac
exit 0
"""
#: Records a call like the fake systemctl, then runs the real program.
RECORDER = r"""#!/bin/sh
plan=$(grep -c '^End of plan' "$FAKE_OUT" 2>/dev/null) || true
[ -e "$FAKE_ROOT/opt" ] && files=yes || files=no
printf '%s\t%s\t%s\t%s\n' "{name}" "$*" "${{plan:-0}}" "$files" >>"$FAKE_LOG"
exec "{real}" "$@"
"""


@dataclass(frozen=True)
class Call:
    program: str
    args: list[str]
    after_plan: bool
    files_existed: bool

    @property
    def verb(self) -> str:
        return next((a for a in self.args if not a.startswith("-")), "")

    @property
    def changes(self) -> bool:
        """A call that changes something (not a systemctl query, a version check)."""
        if self.program == "systemctl":
            return self.verb not in QUERIES
        if self.program == "python":
            return "venv" in self.args
        return True


def with_fake_systemctl(root: Path, tmp: Path, *args: str, active: str,
                        enabled: str) -> tuple[subprocess.CompletedProcess[str], list[Call]]:
    """Run the installer (user USER) with the fake systemctl and recorders of `install`
    and the virtualenv's interpreter first on PATH; its result and the calls."""
    try:
        pwd.getpwnam(USER)
    except KeyError:
        pytest.skip(f"no {USER} user on this machine")
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(FAKE_SYSTEMCTL)
    real_install = shutil.which("install")
    assert real_install is not None
    (bin_dir / "install").write_text(RECORDER.format(name="install", real=real_install))
    (bin_dir / "python").write_text(RECORDER.format(name="python", real=PYTHON))
    for program in bin_dir.iterdir():
        program.chmod(0o755)
    log, out = tmp / "calls.log", tmp / "stdout.txt"
    log.touch()
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_LOG": str(log),
           "FAKE_OUT": str(out), "FAKE_ROOT": str(root), "FAKE_CORDA_ACTIVE": active,
           "FAKE_CORDA_ENABLED": enabled}
    cmd = ["sh", str(INSTALL), "--root", str(root), "--python", str(bin_dir / "python"),
           "--user", USER, *args]
    with out.open("w") as stdout:
        done = subprocess.run(cmd, stdout=stdout, stderr=subprocess.PIPE, text=True,
                              timeout=280, env={**os.environ, **env})
    calls = []
    for line in log.read_text().splitlines():
        name, argv, plan, files = line.split("\t")
        calls.append(Call(name, argv.split(), plan != "0", files == "yes"))
    return subprocess.CompletedProcess(cmd, done.returncode, out.read_text(), done.stderr), calls


def assert_plan_first(calls: list[Call]) -> None:
    """corda.service was looked at before anything existed, and nothing changed anything
    before the plan was complete."""
    queries = [c for c in calls if c.program == "systemctl" and not c.changes]
    assert any("corda.service" in c.args for c in queries), calls
    assert all(not c.files_existed and not c.after_plan for c in queries), queries
    early = [c for c in calls if c.changes and not c.after_plan]
    assert early == [], early


def corda_calls(calls: list[Call]) -> list[list[str]]:
    """The systemctl calls that would change corda.service."""
    return [c.args for c in calls
            if c.program == "systemctl" and c.changes and "corda.service" in c.args]


def enabled_units(calls: list[Call]) -> list[list[str]]:
    return [c.args for c in calls if c.program == "systemctl" and c.verb in ("enable", "start",
                                                                              "restart")]


@needs_root
def test_a_running_corda_service_is_left_alone(scratch_root: Path, tmp_path: Path) -> None:
    done, calls = with_fake_systemctl(scratch_root, tmp_path, active="active", enabled="enabled")
    print(done.stdout + done.stderr)
    assert done.returncode == 0, done.stdout + done.stderr
    assert corda_calls(calls) == []
    # never both on one host: the supervisor is not enabled beside an enabled corda.service
    assert enabled_units(calls) == []
    assert_plan_first(calls)
    assert any(c.changes and c.program == "install" for c in calls)  # the recorders work
    assert ["daemon-reload"] in [c.args for c in calls if c.program == "systemctl"]
    plan = plan_of(done.stdout)
    assert "left alone" in step_line(plan, "corda.service (active, enabled)")
    assert "corda.service exists and was left alone" in done.stdout
    assert "systemctl disable --now corda.service\n" in done.stdout
    assert "systemctl enable --now corda-ha-supervisor\n" in done.stdout


@needs_root
def test_take_over_disables_and_stops_corda_service(scratch_root: Path, tmp_path: Path) -> None:
    done, calls = with_fake_systemctl(scratch_root, tmp_path, "--take-over-corda-service",
                                      active="active", enabled="enabled")
    assert done.returncode == 0, done.stdout + done.stderr
    assert_plan_first(calls)
    assert corda_calls(calls) == [["disable", "corda.service"], ["stop", "corda.service"]]
    assert enabled_units(calls) == [["enable", UNIT_NAME]]  # enabled, not started
    line = step_line(plan_of(done.stdout), "corda.service (active, enabled)")
    assert "TAKE OVER" in line and "stops now" in line


def test_the_dry_run_calls_no_systemctl_that_changes_anything(scratch_root: Path,
                                                              tmp_path: Path) -> None:
    """Without a corda.service the supervisor would be enabled (the plan says so); a dry
    run, with corda.service or without, only asks."""
    for name, active, enabled in [("none", "inactive", ""), ("running", "active", "enabled")]:
        (tmp_path / name).mkdir()
        done, calls = with_fake_systemctl(scratch_root, tmp_path / name, "--dry-run",
                                          active=active, enabled=enabled)
        assert done.returncode == 0, done.stdout + done.stderr
        assert [c for c in calls if c.changes] == []
        assert list(scratch_root.iterdir()) == []
        enable = "systemctl enable corda-ha-supervisor.service"
        assert (enable in plan_of(done.stdout)) == (name == "none"), done.stdout


# ------------------------------------------------------------------ the unit as installed

def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([systemd_analyze("the installed unit is checked with it"), *args],
                          capture_output=True, text=True, timeout=60)


def findings(root: Path) -> list[str]:
    """`systemd-analyze verify --root ROOT` of the installed unit: its lines about our unit
    or its drop-ins (other units' lines are about the machine the test copied them from)."""
    done = analyze("verify", f"--root={root}", "--man=no", UNIT_NAME)
    lines = [line for line in (done.stdout + done.stderr).splitlines()
             if "corda-ha-supervisor" in line]
    if done.returncode != 0 and not lines:
        lines.append(f"exit {done.returncode}: {done.stderr.strip()}")
    return lines


@needs_root
def test_the_installed_unit_verifies(installed: Installed) -> None:
    systemd_analyze("the installed unit is checked with `systemd-analyze verify`")
    system_units = Path("/usr/lib/systemd/system")
    if not (system_units / "multi-user.target").exists():
        pytest.skip("no systemd units on this machine to resolve the unit's dependencies")
    root = installed.root
    # The unit's default dependencies (sysinit.target, ...) come with systemd: a copy of
    # this machine's, so verify resolves them inside the scratch root.
    units = root / "usr" / "lib" / "systemd" / "system"
    if not units.exists():
        shutil.copytree(system_units, units, symlinks=True)
    assert findings(root) == []

    # not vacuous: the ExecStart binary and the drop-ins are those of the scratch root
    installed.cli.chmod(0o644)
    try:
        assert any("is not executable" in line for line in findings(root))
    finally:
        installed.cli.chmod(0o755)
    typo = installed.dropin.parent / "zz-typo.conf"
    typo.write_text("[Service]\nKillMode=mixd\n")
    try:
        assert any("mixd" in line for line in findings(root))
    finally:
        typo.unlink()

    merged = analyze("cat-config", f"--root={root}", f"systemd/system/{UNIT_NAME}")
    assert merged.returncode == 0, merged.stderr
    users = re.findall(r"(?m)^User=(\S+)$", merged.stdout)
    assert users[-1] == USER, merged.stdout  # the drop-in wins over the shipped User=corda

    security = analyze("security", "--offline=yes", f"--root={root}", UNIT_NAME)
    assert security.returncode == 0, security.stderr
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", security.stdout)
    assert found, security.stdout[-500:]
    assert float(found.group(1)) <= EXPOSURE_AT_MOST, security.stdout
    assert "runs as root" not in security.stdout
