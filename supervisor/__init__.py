"""corda-ha-supervisor: keeps exactly one Corda node of a hot-cold pair running."""

__version__ = "0.1.0"
