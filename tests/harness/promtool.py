"""The alert rules (config/prometheus-alerts.yml) against promtool, for tests.

`require()` is promtool's path, or skips the test (Debian's `prometheus` package has it).
`check_rules(path)` runs `promtool check rules` and returns the number of rules it
found. `Replay` is one `promtool test rules` file: the series a `Recorder`
(tests/harness/scrape.py) took from a real run, time-scaled (`SCALE`), and what must
and must not fire at which step; `run()` writes it and runs promtool. `alert_rules(path)`
reads the rules file's alerts (name, expr, for, labels, annotations), and
`metric_names(expr)` the metric names a PromQL expression reads.

Time scale: the rules' durations are written for Corda's example timing (W = 40 s,
config/supervisor.conf) and a 15 s scrape; the lab hosts run at W = 2 s
(tests/harness/host.py), so a recorded run is replayed 20 times slower (`SCALE`). The
rules are evaluated every 5 s of that time (`EVALUATION`), whatever the scrape.

Recorded runs kept: with `CORDA_HA_RECORD_ALERT_TESTS=DIR` in the environment, each
`Replay` that passed also writes its test group to `DIR/<name>.json`;
`python -m tests.harness.promtool DIR > config/prometheus-alerts.test.yml` makes them
the file `promtool test rules config/prometheus-alerts.test.yml` replays.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.harness import needs
from tests.harness.host import W
from tests.harness.paths import REPO
from tests.harness.scrape import Recorder

RULES = REPO / "config" / "prometheus-alerts.yml"
#: The W the rules' durations are written for (Corda's example, config/supervisor.conf).
RULES_W = 40.0
#: Lab seconds -> the rules' seconds.
SCALE = RULES_W / W
#: The Debian package that holds promtool (.ci/run installs it when missing).
#: How often the rules are evaluated, in the rules' seconds.
EVALUATION = 5.0
#: The recorded replays, kept (tests/test_alerts.py replays them without processes).
RECORDED = REPO / "config" / "prometheus-alerts.test.yml"
RECORD_ENV = "CORDA_HA_RECORD_ALERT_TESTS"

FIRING = 'count by (alertname, instance) (ALERTS{alertstate="firing"})'


def require() -> str:
    """promtool's path; skips the test when it is not installed."""
    return needs.program("promtool", "the alert rules are replayed through it")


def promtool(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require(), *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def check_rules(path: Path = RULES) -> int:
    """`promtool check rules`: the number of rules it found (fails the test on an error)."""
    out = promtool("check", "rules", str(path))
    assert out.returncode == 0, out.stdout + out.stderr
    found = re.search(r"SUCCESS: (\d+) rules found", out.stdout + out.stderr)
    assert found, out.stdout + out.stderr
    return int(found.group(1))


def duration(seconds: float) -> str:
    """A Prometheus duration (whole milliseconds)."""
    ms = round(seconds * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


Alert = tuple[str, str | None]  # (alertname, instance or None for a per-pair alert)


def _samples(alerts: set[Alert]) -> list[dict[str, Any]]:
    out = []
    for name, instance in sorted(alerts, key=lambda a: (a[0], a[1] or "")):
        labels = f'alertname="{name}"' + ("" if instance is None else f',instance="{instance}"')
        out.append({"labels": "{" + labels + "}", "value": 1})
    return out


@dataclass
class Replay:
    """One `promtool test rules` file: a recorded run and what must fire when."""

    recorder: Recorder
    name: str
    scale: float = SCALE
    rules: Path = RULES
    tests: list[dict[str, Any]] = field(default_factory=list)

    @property
    def step_seconds(self) -> float:
        """One recorded step, in the rules' seconds."""
        return self.recorder.interval * self.scale

    def time(self, step: int) -> str:
        return duration(step * self.step_seconds)

    def steps(self, rules_seconds: float) -> int:
        """How many steps `rules_seconds` (a duration in the rules) is, rounded up."""
        return -int(-rules_seconds // self.step_seconds)

    def firing(self, step: int, *alerts: Alert) -> None:
        """At `step` exactly these alerts fire (none: nothing fires)."""
        self.tests.append({"expr": FIRING, "eval_time": self.time(step),
                           "exp_samples": _samples(set(alerts))})

    def fired(self, first: int, last: int, names: set[str], *alerts: Alert) -> None:
        """Of the alerts `names`, exactly `alerts` fired at some step in [first, last]."""
        assert last > first
        pattern = "|".join(sorted(names))
        expr = ('count by (alertname, instance) (max_over_time(ALERTS{alertstate="firing",'
                f'alertname=~"{pattern}"}}[{self.time(last - first)}]))')
        self.tests.append({"expr": expr, "eval_time": self.time(last),
                           "exp_samples": _samples(set(alerts))})

    def never(self, first: int, last: int, names: set[str]) -> None:
        """None of the alerts `names` fired at any step in [first, last]."""
        self.fired(first, last, names)

    def group(self) -> dict[str, Any]:
        """The promtool test group: the recorded series and the expectations."""
        series = [{"series": s, "values": v} for s, v in self.recorder.series(self.scale)]
        return {"name": self.name, "interval": self.time(1), "input_series": series,
                "promql_expr_test": self.tests}

    def run(self, path: Path) -> None:
        """Write the test file to `path` and run it; fails with promtool's report."""
        assert self.tests, "nothing to check"
        group = self.group()
        path.write_text(rules_test_file(str(self.rules), [group]))
        out = promtool("test", "rules", str(path))
        assert out.returncode == 0, (
            f"promtool test rules {path} (steps of {self.step_seconds:g} s, recorder "
            f"ticks up to {self.recorder.lateness():.3f} s late):\n{out.stdout}{out.stderr}")
        keep = os.environ.get(RECORD_ENV)
        if keep:
            slug = re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")
            (Path(keep) / f"{slug}.json").write_text(json.dumps(group))


def rules_test_file(rules: str, groups: list[dict[str, Any]]) -> str:
    """A `promtool test rules` file of `groups` against the rule file `rules`."""
    return to_yaml({"rule_files": [rules], "evaluation_interval": duration(EVALUATION),
                    "tests": groups})


def recorded(directory: Path) -> str:
    """The kept replays of `directory` as one test file next to the rules."""
    groups = [json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))]
    head = ("# Generated by tests/test_alerts.py from real runs (tests/harness/promtool.py:\n"
            f"# {RECORD_ENV}=DIR, then python -m tests.harness.promtool DIR). Replay:\n"
            "#   promtool test rules config/prometheus-alerts.test.yml\n")
    return head + rules_test_file(RULES.name, groups)


def to_yaml(value: Any, indent: int = 0) -> str:
    """Block YAML for dicts and lists of strings and numbers (scalars JSON-quoted, which
    YAML reads as double-quoted strings)."""
    pad = " " * indent
    if isinstance(value, dict):
        lines = []
        for k, v in value.items():
            if isinstance(v, dict | list) and v:
                lines.append(f"{pad}{k}:\n{to_yaml(v, indent + 2)}")
            else:
                lines.append(f"{pad}{k}: {json.dumps(v)}")
        return "\n".join(lines) + ("\n" if indent == 0 else "")
    if isinstance(value, list):
        lines = []
        for item in value:
            if isinstance(item, dict | list) and item:
                body = to_yaml(item, indent + 2)
                lines.append(f"{pad}- {body[indent + 2:]}")
            else:
                lines.append(f"{pad}- {json.dumps(item)}")
        return "\n".join(lines)
    return pad + json.dumps(value)


# ------------------------------------------------------------ reading the rules

@dataclass
class Rule:
    """One alerting rule of the rules file."""

    alert: str
    expr: str
    duration: str | None  # `for:`
    labels: dict[str, str]
    annotations: dict[str, str]


_KEY = re.compile(r"^(\s*)(- )?([a-z_]+):\s?(.*)$")


def alert_rules(path: Path = RULES) -> list[Rule]:
    """The alerting rules of `path`, which keeps to one shape: `- alert:` items whose
    `expr` is a block scalar (`|`) or one line, and `labels`/`annotations` maps of
    one-line quoted or plain strings. `check_rules` counts the rules promtool finds, so
    a test can assert nothing was missed."""
    rules: list[Rule] = []
    lines = path.read_text().splitlines()
    i, section = 0, ""
    while i < len(lines):
        m = _KEY.match(lines[i])
        i += 1
        if m is None or lines[i - 1].lstrip().startswith("#"):
            continue
        indent, key, text = len(m.group(1)), m.group(3), m.group(4).strip()
        if key == "alert":
            rules.append(Rule(text, "", None, {}, {}))
            section = ""
            continue
        if not rules:
            continue
        rule = rules[-1]
        if key == "expr" and text in ("|", "|-", ">", ">-"):
            block = []
            while i < len(lines) and (not lines[i].strip()
                                      or len(lines[i]) - len(lines[i].lstrip()) > indent):
                block.append(lines[i].strip())
                i += 1
            rule.expr = " ".join(b for b in block if b)
        elif key == "expr":
            rule.expr = text
        elif key == "for":
            rule.duration = text
        elif key in ("labels", "annotations") and not text:
            section = key
        elif section and text:
            value = json.loads(text) if text.startswith('"') else text.strip("'")
            getattr(rule, section)[key] = value
    return rules


# ------------------------------------------------------------ metric names in PromQL

_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
             "group_right", "bool", "offset", "inf", "nan"}
_AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count",
                 "count_values", "bottomk", "topk", "quantile", "limitk", "limit_ratio"}


def metric_names(expr: str) -> set[str]:
    """The metric names `expr` selects (PromQL, Grafana variables allowed): what is
    left once strings, label matchers, ranges, label lists and calls are taken out."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"\boffset\s+-?[\w$]+", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w.$:])([A-Za-z_:][\w:]*)(?![\w:])(\s*\()?", s):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in _KEYWORDS or word in _AGGREGATIONS:
            continue
        names.add(word)
    return names


if __name__ == "__main__":
    sys.stdout.write(recorded(Path(sys.argv[1])))
