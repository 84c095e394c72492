"""`python -m supervisor` is the same as the `corda-ha-supervisor` command."""

from supervisor.cli.command import main

if __name__ == "__main__":
    raise SystemExit(main())
