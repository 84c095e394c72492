"""The Corda-like JVM stand-in (tests/jvm/CordaStandIn.java) for tests: build, configure, run.

`command(*args)` compiles the stand-in once (javac, with Debian's PostgreSQL JDBC driver
on the class path) into a cache directory keyed by the source and the JDK, and returns
the command line that runs it: ``java <options> -cp <classes>:<driver> CordaStandIn
ARGS...``. Compilation is atomic (a temporary directory renamed into place), so
concurrent test sessions share the cache safely. `missing()` says why the stand-in
cannot run here (no java or javac, no driver jar); `require()` skips the calling test
with that reason. `JvmUnavailable` is raised by `command()` in that case.

`NodeConf` renders a Corda-style ``node.conf`` (myLegalName, p2pAddress, rpcSettings,
dataSourceProperties, enterpriseConfiguration.mutualExclusionConfiguration) that the
stand-in reads (``--config-file`` or ``./node.conf``) and that pyhocon reads too, so a
supervisor test can point both at one file. `jdbc_url(dsn)` turns a libpq URI into a
JDBC URL plus user and password.

`start(reaper, ...)` runs one stand-in directly (no supervisor) in its own process
group tracked by the reaper, its output collected by a thread: `StandIn.wait_line`,
`StandIn.wait_exit`, `StandIn.record`.

The stand-in's own behaviour and flags are documented at the top of the Java file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict

from tests.harness import needs
from tests.harness.paths import JVM_SOURCE
from tests.harness.proc import Reaper

SOURCE = JVM_SOURCE
MAIN_CLASS = "CordaStandIn"
JDBC_JAR = Path(os.environ.get("CORDA_HA_JDBC_JAR", "/usr/share/java/postgresql.jar"))
CACHE_ENV = "CORDA_HA_JVM_CACHE"
# A small, quick-starting JVM: one GC thread, C1 only, class data sharing, little heap.
JVM_OPTIONS = ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xshare:auto", "-Xmx64m",
               "-XX:-UsePerfData")
REGISTERED = re.compile(r'Node for "(?P<name>[^"]*)" started up and registered in '
                        r'(?P<sec>[0-9.]+) sec')
FAILED_MASTER = "failed to become the master node"


class JvmUnavailable(RuntimeError):
    """java, javac or the PostgreSQL JDBC driver is missing (the message says which)."""


def missing() -> str | None:
    """Why the stand-in cannot run here, or None when it can."""
    for tool in ("java", "javac"):
        reason = needs.missing(tool, "the JVM stand-in needs a JDK 17")
        if reason is not None:
            return reason
    if not JDBC_JAR.is_file():
        return (f"{JDBC_JAR} not found: the JVM stand-in needs the PostgreSQL JDBC driver "
                "(Debian: apt-get install libpostgresql-jdbc-java)")
    return None


def require() -> None:
    """Skip the calling test, with the reason, when the stand-in cannot run here."""
    reason = missing()
    if reason is not None:
        pytest.skip(reason)


def cache_root() -> Path:
    """Where compiled stand-ins live: $CORDA_HA_JVM_CACHE or <tmp>/corda-ha-jvm-cache."""
    return Path(os.environ.get(CACHE_ENV) or Path(tempfile.gettempdir(), "corda-ha-jvm-cache"))


@functools.cache
def classes_dir() -> Path:
    """The directory holding the compiled stand-in, compiling it on first use (once per
    process; reused across processes while the source and the JDK are unchanged).
    Raises JvmUnavailable, or RuntimeError with javac's output when compilation fails."""
    reason = missing()
    if reason is not None:
        raise JvmUnavailable(reason)
    version = subprocess.run(["javac", "-version"], capture_output=True, text=True,
                             timeout=60).stdout + subprocess.run(
        ["java", "-version"], capture_output=True, text=True, timeout=60).stderr
    key = hashlib.sha256(SOURCE.read_bytes() + version.encode()).hexdigest()[:16]
    root = cache_root()
    target = root / key
    if (target / f"{MAIN_CLASS}.class").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    building = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=root))
    try:
        result = subprocess.run(
            ["javac", "-Xlint:all", "-Werror", "-d", str(building), "-cp", str(JDBC_JAR),
             str(SOURCE)], capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            raise RuntimeError(f"javac failed:\n{result.stdout}{result.stderr}")
        os.chmod(building, 0o755)  # readable by a node run as another user
        try:
            os.rename(building, target)
        except OSError:  # another session finished first: use its copy
            if not (target / f"{MAIN_CLASS}.class").is_file():
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return target


def command(*args: str) -> list[str]:
    """The command line that runs the stand-in with `args` (compiling it if needed)."""
    classpath = f"{classes_dir()}:{JDBC_JAR}"
    return ["java", *JVM_OPTIONS, "-cp", classpath, MAIN_CLASS, *args]


def jdbc_url(dsn: str) -> tuple[str, str | None, str | None]:
    """(JDBC URL, user, password) for a libpq URI or key=value string (host, port, dbname)."""
    params = conninfo_to_dict(dsn)
    host = str(params.get("host") or params.get("hostaddr") or "127.0.0.1")
    port = str(params.get("port") or 5432)
    dbname = str(params.get("dbname") or params.get("user") or "postgres")
    user = params.get("user")
    password = params.get("password")
    return (f"jdbc:postgresql://{host}:{port}/{dbname}",
            None if user is None else str(user), None if password is None else str(password))


def _hocon(value: str) -> str:
    return json.dumps(value)  # a JSON string is a HOCON quoted string


@dataclass
class NodeConf:
    """A Corda-style node.conf for the stand-in (and for pyhocon)."""

    machine_name: str
    jdbc_url: str
    user: str | None = None
    password: str | None = None
    update_ms: int = 500
    wait_ms: int = 2000
    mutex_on: bool = True
    p2p_port: int = 0  # 0: any free port (the record's p2p_port tells which)
    rpc_port: int | None = None
    legal_name: str | None = None
    host: str = "127.0.0.1"

    @classmethod
    def for_dsn(cls, dsn: str, machine_name: str, **kw: Any) -> NodeConf:
        url, user, password = jdbc_url(dsn)
        return cls(machine_name=machine_name, jdbc_url=url, user=user, password=password, **kw)

    def render(self) -> str:
        legal = self.legal_name or f"O={self.machine_name},L=London,C=GB"
        lines = [
            f"myLegalName = {_hocon(legal)}",
            f"p2pAddress = {_hocon(f'{self.host}:{self.p2p_port}')}",
        ]
        if self.rpc_port is not None:
            lines += ["rpcSettings {", f"    address = {_hocon(f'{self.host}:{self.rpc_port}')}",
                      "}"]
        lines += ["dataSourceProperties {",
                  '    dataSourceClassName = "org.postgresql.ds.PGSimpleDataSource"',
                  f"    dataSource.url = {_hocon(self.jdbc_url)}"]
        if self.user is not None:
            lines.append(f"    dataSource.user = {_hocon(self.user)}")
        if self.password is not None:
            lines.append(f"    dataSource.password = {_hocon(self.password)}")
        lines += ["}",
                  "enterpriseConfiguration {",
                  "    mutualExclusionConfiguration {",
                  f"        on = {'true' if self.mutex_on else 'false'}",
                  f"        machineName = {_hocon(self.machine_name)}",
                  f"        updateInterval = {self.update_ms}",
                  f"        waitInterval = {self.wait_ms}",
                  "    }",
                  "}"]
        return "\n".join(lines) + "\n"

    def write(self, path: Path) -> Path:
        """Write the file (mode 0600: it may hold a password); returns `path`."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.render())
        return path


class StandIn:
    """A stand-in process started by `start`; its merged stdout/stderr is collected."""

    def __init__(self, proc: subprocess.Popen[str], record_dir: Path | None) -> None:
        self.proc = proc
        self.record_dir = record_dir
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.eof = False
        self.started = time.monotonic()
        threading.Thread(target=self._read, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    def output(self) -> str:
        with self.cond:
            return "\n".join(self.lines)

    def find(self, pattern: str) -> re.Match[str] | None:
        """The first output line matching `pattern` (re.search), or None."""
        with self.cond:
            for line in self.lines:
                m = re.search(pattern, line)
                if m:
                    return m
        return None

    def wait_line(self, pattern: str, timeout: float) -> re.Match[str]:
        """Block until an output line matches `pattern`; AssertionError with the output
        after `timeout` s or when the process ends without it."""
        deadline = time.monotonic() + timeout
        with self.cond:
            seen = 0
            while True:
                for line in self.lines[seen:]:
                    m = re.search(pattern, line)
                    if m:
                        return m
                seen = len(self.lines)
                left = deadline - time.monotonic()
                ended = self.eof
                if left <= 0 or ended:
                    why = "the stand-in ended" if ended else f"timed out after {timeout:.1f}s"
                    raise AssertionError(f"{why} without a line matching {pattern!r}; "
                                         f"output:\n" + "\n".join(self.lines[-40:]))
                self.cond.wait(min(left, 0.2))

    def wait_exit(self, timeout: float) -> int:
        """The exit status, once the process has exited *and* all its output has been
        read (a loaded run looked at `output()` before the reader thread had the last
        lines). AssertionError with the output when either takes longer than `timeout`."""
        deadline = time.monotonic() + timeout
        try:
            status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the stand-in still runs after {timeout:.1f}s; output:\n"
                                 + self.output()) from None
        with self.cond:
            while not self.eof:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("the stand-in exited but its output did not end "
                                         f"within {timeout:.1f}s:\n" + "\n".join(self.lines))
                self.cond.wait(left)
        return status

    def record(self) -> dict[str, Any]:
        """Its record file (needs --record)."""
        assert self.record_dir is not None, "started without a record directory"
        return dict(json.loads((self.record_dir / f"{self.pid}.json").read_text()))


def start(reaper: Reaper, workdir: Path, *args: str, conf: NodeConf | None = None,
          record_dir: Path | None = None, lock: Path | None = None,
          env: dict[str, str] | None = None) -> StandIn:
    """Run the stand-in in `workdir` (its ./node.conf is `conf`, when given), with
    `--record record_dir` / `--lock lock` when given and `args` after them. Its process
    group is SIGKILLed and reaped at the reaper's teardown."""
    workdir.mkdir(parents=True, exist_ok=True)
    if conf is not None:
        conf.write(workdir / "node.conf")
    extra: list[str] = []
    if record_dir is not None:
        record_dir.mkdir(parents=True, exist_ok=True)
        extra += ["--record", str(record_dir)]
    if lock is not None:
        extra += ["--lock", str(lock)]
    full_env = dict(os.environ)
    full_env.pop("NOTIFY_SOCKET", None)
    full_env.update(env or {})
    proc = reaper.popen(command(*extra, *args), cwd=str(workdir), env=full_env,
                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT, text=True)
    return StandIn(proc, record_dir)
