"""The `candidate { nofailover = false, priority = 0 }` block: how this host stands as a
standby (docs/configuration.md, "candidate"). Values only; the rules live in
`supervisor.core.candidates`."""

from __future__ import annotations

from supervisor.config.blocks import Block
from supervisor.config.model import CandidateConfig

_CANDIDATE_KEYS = ("nofailover", "priority")
#: The accepted range of `candidate.priority` (it is published in the member table).
PRIORITY_RANGE = (-1000, 1000)


def parse_candidate(root: Block) -> CandidateConfig:
    """`candidate { ... }`, or the defaults when absent; a `ConfigError` naming the key."""
    block = root.block("candidate")
    if block is None:
        return CandidateConfig()
    block.check_keys(_CANDIDATE_KEYS)
    priority = block.get_int("priority", 0)
    low, high = PRIORITY_RANGE
    if not low <= priority <= high:
        block.fail("priority", f"must be an integer from {low} to {high}, got {priority}")
    return CandidateConfig(nofailover=block.get_bool("nofailover", False), priority=priority)
