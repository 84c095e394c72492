"""The demo's stand-in Corda node (stdlib only; run as a plain script).

Behaves like a node as far as the supervisor can tell: it runs until SIGTERM
and then exits 0 after a short pretend shutdown (`--stop-delay`, default 0.1 s).
SIGUSR1 tells it to crash: it exits 3 at once, as a node that fell over would.
At start it prints ``node up pid=<pid> epoch=<CORDA_HA_EPOCH> host=<machine>``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

EXIT_CRASH = 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="demo-node")
    parser.add_argument("--stop-delay", type=float, default=0.1)
    args = parser.parse_args(argv)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGUSR1})
    print(f"node up pid={os.getpid()} epoch={os.environ.get('CORDA_HA_EPOCH')} "
          f"host={os.environ.get('CORDA_HA_MACHINE_NAME')}", flush=True)
    info = signal.sigwaitinfo({signal.SIGTERM, signal.SIGUSR1})
    if info.si_signo == signal.SIGUSR1:
        print("node crashing (told to by SIGUSR1)", file=sys.stderr, flush=True)
        return EXIT_CRASH
    print("node stopping", flush=True)
    time.sleep(args.stop_delay)
    print("node stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
