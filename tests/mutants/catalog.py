"""The curated list of safety mutants: one deliberate break per safety rule.

Each entry names the rule it breaks, the file, an exact search text (which must
occur exactly once: `tests/test_mutants.py` checks that in every CI run, so the
list cannot rot silently) and its replacement, and the fast tests (unit tests or
single end-to-end tests, never the chaos run) of which one must fail. Keep the
killing tests fast: the whole list should run in a few minutes with `--jobs 1`.

Add a mutant for every new safety rule. A `todo` entry is a placeholder for a
rule whose code is not merged yet; it is listed, never run.
"""

from __future__ import annotations

from tests.mutants.runner import Mutant

STEP = "supervisor/core/step.py"
STATE = "supervisor/core/state.py"
BASE = "supervisor/core/base.py"
HOLDER = "supervisor/core/holder.py"
STANDBY = "supervisor/core/standby.py"
LIFECYCLE = "supervisor/core/lifecycle.py"
CONFIG = "supervisor/config/loader.py"
DAEMON = "supervisor/daemon/loop.py"
LEASECALLS = "supervisor/daemon/leasecalls.py"
NODERUN = "supervisor/daemon/noderun.py"
GUARD = "supervisor/node/guard.py"
NODE = "supervisor/node/process.py"
SQL = "supervisor/lease/sql.py"
OBS = "supervisor/core/observation.py"
DBFENCE = "supervisor/lease/fence.py"
FENCE_TESTS = "tests/test_db_fencing.py"
INSTALLER = "systemd/install.sh"
INSTALL_TESTS = "tests/test_install.py"
ALERTS = "config/prometheus-alerts.yml"
ROAD = "tests/test_operator_road.py::"
REFUSED_LOGIN = ('        return (f"the database refused the login of database.user = {user}: '
                 'check the user "\n')

MUTANTS: tuple[Mutant, ...] = (
    # ------------------------------------------------------------ harness canaries
    Mutant(
        "canary_guard_via_node",
        "harness: the guard started by supervisor/node/process.py imports the mutated copy",
        GUARD,
        '    """Entry point; see the module docstring for the protocol."""\n',
        '    """Entry point; see the module docstring for the protocol."""\n'
        '    raise SystemExit("mutant canary")\n',
        ("tests/test_node.py::test_start_and_stop_gracefully",),
    ),
    Mutant(
        "canary_supervisor_via_cli",
        "harness: `python -m supervisor` started by tests/harness/host.py imports the "
        "mutated copy",
        "supervisor/__main__.py",
        "    raise SystemExit(main())\n",
        '    raise SystemExit("mutant canary")\n',
        ("tests/test_cli.py::test_version",),
    ),
    Mutant(
        "watcher_blind",
        "harness: the overlap watcher reports two live nodes at once",
        "tests/harness/watcher_proc.py",
        "        if sum(len(v) for v in alive.values()) > 1:\n",
        "        if sum(len(v) for v in alive.values()) > 2:\n",
        ("tests/test_watcher.py::test_a_10ms_overlap_is_seen_by_sampling",),
    ),
    Mutant(
        "watcher_stall_forgiven",
        "harness: a stall of the watcher's sampler across a change of nodes fails the run",
        "tests/harness/watcher.py",
        "                and len(set(before) | set(after) | set(touched)) >= 2]\n",
        "                and False]\n",
        ("tests/test_watcher.py::test_a_stall_across_a_change_of_nodes_fails",),
    ),
    Mutant(
        "watcher_passes_over_python",
        "harness: the watcher's scan reads the command line of every process named as a "
        "stand-in node can be (python..., java)",
        "tests/harness/nodescan.py",
        "NODE_COMMS = (b\"python\", b\"java\", NODE_MARK[:15])\n",
        "NODE_COMMS = (b\"java\", NODE_MARK[:15])\n",
        ("tests/test_watcher.py::test_a_10ms_overlap_is_seen_by_sampling",),
    ),
    Mutant(
        "side_connection_held_idle",
        "a store holds no connection it does not use: the side channel closes its "
        "connection once idle",
        "supervisor/lease/channel.py",
        "            self.drop(self._conn)\n",
        "            return\n",
        ("tests/test_lease_channels.py::"
         "test_the_side_connection_is_closed_when_idle_and_reopened_on_demand",),
    ),
    Mutant(
        "observe_imports_the_lease",
        "layout: a package imports only what its map allows (what the operator sees "
        "never reaches into the lease)",
        "supervisor/observe/sdnotify.py",
        "from __future__ import annotations\n",
        "from __future__ import annotations\n\nimport supervisor.lease.sql  # noqa: F401\n",
        ("tests/test_layout.py::test_a_package_imports_only_what_its_map_allows[observe]",),
    ),
    # ------------------------------------------------------------ the timing rule
    Mutant(
        "kill_late",
        "KillNode at t + W - M (the core sends it 1 s late)",
        STEP,
        "            if now >= kill_at:\n",
        "            if now >= kill_at + 1.0:\n",
        ("tests/test_core_deadlines.py",),
    ),
    Mutant(
        "kill_deadline_not_a_wakeup",
        "the core wakes up at t + W - M (not only at its next loop turn)",
        STATE,
        "            times.append(kill_at)\n",
        "            pass\n",
        ("tests/test_core_deadlines.py",),
    ),
    Mutant(
        "sigterm_at_w_m_s",
        "loss grace G: SIGTERM at t + W - M - G, not t + W - M - S",
        STEP,
        "            elif (now >= kill_at - t.loss_grace and s.node.phase is not NodePhase.NONE\n",
        "            elif (now >= kill_at - t.stop_timeout and"
        " s.node.phase is not NodePhase.NONE\n",
        ("tests/test_core_rules.py::test_cordas_ratio_runs_one_node_steadily_for_many_renewals",),
    ),
    Mutant(
        "grace_formula_is_s",
        "G = min(S, W - M - U - R), not S",
        "supervisor/core/timing.py",
        "    grace = max(0.0, min(stop_timeout, window - allowance))\n",
        "    grace = stop_timeout\n",
        ("tests/test_core_rules.py::test_stop_graces_at_cordas_documented_timing",),
    ),
    Mutant(
        "planned_stop_grace_capped",
        "a planned stop gets the full S, not min(S, time to the kill deadline)",
        BASE,
        "        return self.t.stop_timeout\n",
        "        return min(self.t.stop_timeout,\n"
        "                   (kill_deadline(self.s, self.t) or float('inf')) - self.now)\n",
        ("tests/test_core_rules.py::test_planned_stop_keeps_full_s_while_renewals_go_on",),
    ),
    Mutant(
        "t_is_answer_time_in_core",
        "t is when the renewal was sent, not when it was answered (core)",
        HOLDER,
        "        s.lease.renewed_sent_at ="
        " max(s.lease.renewed_sent_at or ev.sent_at, ev.sent_at)\n",
        "        s.lease.renewed_sent_at = self.now\n",
        ("tests/test_core_rules.py::test_cordas_ratio_runs_one_node_steadily_for_many_renewals",),
    ),
    Mutant(
        "t_is_answer_time_in_daemon",
        "t is when the renewal was sent, not when it was answered (daemon)",
        LEASECALLS,
        "return LeaseRenewed(sent_at=sent_at, handover_requested=",
        "return LeaseRenewed(sent_at=self.clock(), handover_requested=",
        ("tests/test_daemon_node.py::test_guard_kills_at_the_deadline_while_the_loop_is_frozen",),
    ),
    Mutant(
        "renewal_not_bounded_by_kill_deadline",
        "a renewal keeps trying up to t + W - M, never beyond",
        STEP,
        "timeout = self.op_timeout() if kill_at is None else max(0.05, kill_at - now)",
        "timeout = self.op_timeout() if kill_at is None else kill_at - now + 1.0",
        ("tests/test_core.py::test_renews_every_update_interval_and_extends_guard_deadline",),
    ),
    Mutant(
        "acquire_too_late_runs",
        "an acquisition answered after t + W - M - G starts no node",
        STANDBY,
        "        if term_at is not None and self.now >= term_at:\n",
        "        if False:\n",
        ("tests/test_core.py::test_acquire_answered_too_late_is_handed_back_not_run",),
    ),
    Mutant(
        "lease_lost_stops_gracefully",
        "a renewal that matched no row kills the node at once",
        HOLDER,
        '            self.kill_node("lease_lost")\n',
        '            self.stop_node("lease_lost", self.t.stop_timeout)\n',
        ("tests/test_core.py::test_lease_lost_kills_node_at_once",),
    ),
    Mutant(
        "second_sigterm_ignored",
        "a second shutdown request kills the node at once",
        LIFECYCLE,
        '            self.kill_node("second_shutdown_request")\n',
        "            pass\n",
        ("tests/test_core_deadlines.py::test_second_shutdown_request_kills_at_once",),
    ),
    Mutant(
        "release_before_node_gone",
        "the lease is released only once the node is gone",
        STEP,
        "        elif lease.release_epoch is not None and s.node.phase is NodePhase.NONE:\n",
        "        elif lease.release_epoch is not None:\n",
        ("tests/test_core_deadlines.py::test_no_release_while_the_node_stops",),
    ),
    Mutant(
        "restart_too_late",
        "a crashed node is restarted only while it could still be stopped in time",
        STEP,
        "                                       and now < term_at):\n",
        "                                       ):\n",
        ("tests/test_core_deadlines.py::test_no_restart_after_the_term_deadline",),
    ),
    Mutant(
        "two_lease_calls",
        "one lease call at a time",
        STEP,
        "        if not s.lease_enabled or s.lease.op is not None:\n",
        "        if not s.lease_enabled:\n",
        ("tests/test_core_property.py",),
    ),
    Mutant(
        "stray_lease_kept",
        "an acquire that committed after it was given up is released at once",
        STANDBY,
        "        if ev.mine:\n",
        "        if False:\n",
        ("tests/test_core.py::test_stray_lease_of_our_own_is_released",),
    ),
    # ------------------------------------------------------------ the guard's deadline
    Mutant(
        "renewals_never_extend_deadline",
        "each successful renewal moves the guard's deadline to t + W - M",
        HOLDER,
        "            self.actions.append(SetNodeDeadline(kill_at))\n",
        "            pass\n",
        ("tests/test_core_property.py",),
    ),
    Mutant(
        "daemon_drops_deadline_updates",
        "the daemon passes each new deadline to the guard",
        DAEMON,
        '                self.node.command(lambda p: p.set_deadline(deadline))\n',
        '                pass\n',
        ("tests/test_daemon_node.py::test_guard_kills_at_the_deadline_while_the_loop_is_frozen",),
    ),
    Mutant(
        "guard_started_without_deadline",
        "the node is guarded by t + W - M from its first instant",
        NODERUN,
        'kill_deadline=action.kill_deadline, on_output=self._output,',
        'kill_deadline=None, on_output=self._output,',
        ("tests/test_daemon_node.py::test_guard_kills_at_the_deadline_while_the_loop_is_frozen",),
    ),
    Mutant(
        "start_without_deadline",
        "StartNode carries the kill deadline",
        BASE,
        "       "
        " self.actions.append(StartNode(self.s.lease.epoch, kill_deadline(self.s, self.t)))\n",
        "        self.actions.append(StartNode(self.s.lease.epoch, None))\n",
        ("tests/test_core_property.py",),
    ),
    Mutant(
        "guard_ignores_deadline",
        "the guard SIGKILLs the node group when its deadline passes",
        GUARD,
        "        times = [t for t in (self.deadline, self.stop_kill_at) if t is not None]\n",
        "        times = [t for t in (self.stop_kill_at,) if t is not None]\n",
        ("tests/test_guard.py::test_deadline_fires_on_time",),
    ),
    Mutant(
        "guard_ignores_deadline_updates",
        "the guard applies `deadline <t>` commands",
        GUARD,
        "            self.deadline = cmd.value\n",
        "            pass\n",
        ("tests/test_guard.py::test_deadline_extension_and_clearing",),
    ),
    Mutant(
        "guard_stop_grace_outlives_deadline",
        "the guard's deadline cuts a stop grace short",
        GUARD,
        "        return min(times) if times else None\n",
        "        return max(times) if times else None\n",
        ("tests/test_guard.py::test_deadline_shortens_a_stop_grace",),
    ),
    Mutant(
        "guard_later_stop_lengthens",
        "a later `stop` can only shorten the guard's kill timer",
        GUARD,
        "                if self.stop_kill_at is None or at < self.stop_kill_at:\n",
        "                if True:\n",
        ("tests/test_guard.py::test_a_later_stop_never_lengthens_the_grace",),
    ),
    Mutant(
        "guard_starts_after_deadline",
        "the guard does not start a node whose deadline has passed",
        GUARD,
        "        if self.deadline is not None and clock.now() >= self.deadline:\n",
        "        if False:\n",
        ("tests/test_guard.py::test_deadline_already_passed_does_not_start",),
    ),
    Mutant(
        "guard_no_kill_on_eof",
        "the guard SIGKILLs the node group when its stdin closes (supervisor gone)",
        GUARD,
        '            if not self.kill_sent:\n                self.signal_group(signal.SIGKILL, '
        '"supervisor_gone")\n',
        "            pass\n",
        ("tests/test_guard.py::test_eof_on_stdin_kills_the_group_at_once",),
    ),
    Mutant(
        "guard_no_pdeathsig",
        "the node dies with its guard (PR_SET_PDEATHSIG)",
        GUARD,
        "        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:\n",
        "        if False:\n",
        ("tests/test_guard.py::test_sigkill_of_the_guard_kills_the_node",),
    ),
    Mutant(
        "guard_sigterm_ignored",
        "SIGTERM to the guard SIGKILLs the node group",
        GUARD,
        "            if terminated() and not self.kill_sent:\n",
        "            if False:\n",
        ("tests/test_guard.py::test_sigterm_to_the_guard_kills_the_group",),
    ),
    Mutant(
        "guard_leaves_group_members",
        "when the node's leader exits, the rest of its group is SIGKILLed",
        GUARD,
        "            self.signal_group(signal.SIGKILL, None)\n"
        "            returncode, sig = self.reap()\n",
        "            returncode, sig = self.reap()\n",
        ("tests/test_guard.py::test_crash_is_reported_and_leftovers_are_killed",),
    ),
    Mutant(
        "guard_error_no_kill",
        "an unexpected error inside the guard SIGKILLs the node group",
        GUARD,
        '                self.signal_group(signal.SIGKILL, "guard_error")\n',
        "                pass\n",
        ("tests/test_guard.py::test_an_error_inside_the_guard_kills_the_group",),
    ),
    # ------------------------------------------------------------ the node handle
    Mutant(
        "orphan_group_survives",
        "when the guard vanishes, the supervisor SIGKILLs the node's whole group",
        "supervisor/node/guardfence.py",
        "            os.killpg(pgid or pid, signal.SIGKILL)\n",
        "            pass\n",
        ("tests/test_node.py::test_guard_sigkilled_the_whole_node_group_dies",),
    ),
    Mutant(
        "cancelled_start_keeps_guard",
        "a cancelled start closes the guard's stdin (so no node survives it)",
        NODE,
        "            # SIGKILL the node and exit; the supervising task, if any, reaps it.\n"
        "            self._abort(guard)\n",
        "            # SIGKILL the node and exit; the supervising task, if any, reaps it.\n",
        ("tests/test_node.py::test_cancelled_start_leaves_no_guard_and_no_node",),
    ),
    Mutant(
        "stale_node_not_swept",
        "a node left over from an earlier run (found by its environment marker) is killed",
        "supervisor/node/sweep.py",
        "                try:\n                    os.kill(pid, signal.SIGKILL)\n"
        "                except PermissionError as exc:\n",
        "                try:\n                    pass\n"
        "                except PermissionError as exc:\n",
        ("tests/test_node_sweep.py::test_stale_node_sweep_by_environment_marker",),
    ),
    Mutant(
        "sweep_unbounded",
        "the stale-node sweep is bounded in time; a hung sweep fails the start, not the loop",
        "supervisor/node/threads.py",
        "        return await asyncio.wait_for(asyncio.shield(done), timeout)\n",
        "        return await asyncio.shield(done)\n",
        ("tests/test_node_sweep.py::test_blocked_sweep_fails_the_start_in_time_and_the_loop_runs",),
    ),
    Mutant(
        "cgroup_not_killed",
        "a node run lives in its own cgroup and is killed with cgroup.kill",
        "supervisor/node/cgroup.py",
        '        os.write(fd, b"1")\n',
        "        pass\n",
        ("tests/test_cgroup.py::test_create_move_kill_remove",),
    ),
    Mutant(
        "stalled_guard_not_fenced",
        "a guard that stops acknowledging commands is killed with the node by the supervisor",
        NODE,
        '        self._fence("guard_stalled", kill_guard=True)\n',
        "        pass\n",
        ("tests/test_node_fence.py::test_unacknowledged_command_means_guard_stalled",),
    ),
    Mutant(
        "supervisor_deadline_not_fenced",
        "the supervisor kills the node itself at the deadline when the guard is frozen",
        NODE,
        '            self._fence("deadline")\n',
        "            pass\n",
        ("tests/test_node_fence.py::test_frozen_guard_supervisor_kills_at_the_deadline",),
    ),
    Mutant(
        "epoch_not_given_to_node",
        "the node gets its fencing epoch (CORDA_HA_EPOCH)",
        "supervisor/node/launch.py",
        '    env["CORDA_HA_EPOCH"] = str(epoch)\n',
        "    pass\n",
        ("tests/test_node.py::test_node_environment",),
    ),
    # ------------------------------------------------------------ the daemon
    Mutant(
        "lease_call_unbounded",
        "every lease call posts a result within its timeout + CALL_GRACE",
        LEASECALLS,
        "done, _ = await asyncio.wait({task}, timeout=action.timeout + CALL_GRACE)",
        "done, _ = await asyncio.wait({task}, timeout=None)",
        ("tests/test_daemon_lease_calls.py::test_an_observe_that_never_answers_is_failed_in_time",),
    ),
    Mutant(
        "store_exception_swallows_result",
        "a store raising an unexpected exception still yields LeaseCallFailed",
        LEASECALLS,
        '        except Exception as e:\n            log.exception("lease_call_error", op=kind)\n',
        "        except ArithmeticError as e:\n"
        '            log.exception("lease_call_error", op=kind)\n',
        ("tests/test_daemon_lease_calls.py::test_unexpected_store_exceptions_are_failed_calls",),
    ),
    Mutant(
        "start_error_no_exit_event",
        "a node start that raises yields NodeExited",
        NODERUN,
        '        except Exception as e:\n            log.exception("node_start_error")\n',
        '        except ArithmeticError as e:\n            log.exception("node_start_error")\n',
        ("tests/test_daemon_node.py::test_a_start_that_raises_is_a_crash",),
    ),
    Mutant(
        "no_kill_on_exit",
        "the daemon never leaves with its node running (node_killed_on_exit)",
        DAEMON,
        '            process.kill()\n',
        '            pass\n',
        ("tests/test_daemon_node.py::test_node_killed_when_the_daemon_leaves_with_it_running",),
    ),
    Mutant(
        "commands_lost_while_starting",
        "node commands that arrive while the node starts are applied once it runs",
        NODERUN,
        '            self.slot.pending.append(command)\n',
        '            pass\n',
        ("tests/test_daemon_node.py::test_shutdown_while_the_node_starts",),
    ),
    Mutant(
        "sigterm_not_a_shutdown",
        "SIGTERM is a planned stop (stop the node, release, exit 0)",
        DAEMON,
        'loop.add_signal_handler(sig, self.post, ShutdownRequested(sig.name))',
        'loop.add_signal_handler(sig, lambda: None)',
        ("tests/test_daemon_node.py::test_second_sigterm_kills_the_node",),
    ),
    # ------------------------------------------------------------ the standby's stopwatch
    Mutant(
        "standby_skips_stopwatch",
        "a held row is taken only after W unchanged on the standby's own clock",
        STANDBY,
        "        if ev.expired and unchanged_for >= wait:\n",
        "        if ev.expired:\n",
        ("tests/test_core.py::test_standby_waits_w_of_unchanged_row_on_its_own_clock",),
    ),
    # ------------------------------------------------------------ candidates
    Mutant(
        "priority_takes_sooner",
        "priority only adds waiting: no standby takes a held row before W unchanged",
        STANDBY,
        "        wait = self.t.wait_interval + extra\n",
        "        wait = self.t.wait_interval - (1 - extra) * self.t.update_interval\n",
        ("tests/test_core_candidates.py::test_priority_never_takes_sooner_than_w",),
    ),
    Mutant(
        "nofailover_takes",
        "a candidate.nofailover host never takes the lease",
        STANDBY,
        "        if (s.candidacy.nofailover\n",
        "        if (False\n",
        ("tests/test_core_candidates.py::test_nofailover_never_takes_a_free_or_an_expired_row",),
    ),
    Mutant(
        "stopwatch_survives_version_change",
        "a changed row (renewed, or gone back in time) restarts the stopwatch",
        STANDBY,
        "        if ev.version != s.lease.seen:\n",
        "        if s.lease.seen is None:\n",
        ("tests/test_core.py::test_row_going_back_in_time_restarts_the_stopwatch",),
    ),
    # ------------------------------------------------------------ the lease statements
    Mutant(
        "renew_keeps_expires_at",
        "a renewal moves expires_at to now + W",
        SQL,
        "SET renewed_at = n.now, expires_at = n.now + %(w)s, server_id = {server}",
        "SET renewed_at = n.now, server_id = {server}",
        ("tests/test_lease.py::test_expires_at_follows_every_renewal",),
    ),
    Mutant(
        "renew_after_expiry",
        "an expired lease cannot be renewed",
        SQL,
        "                 AND l.epoch = %(epoch)s AND l.expires_at > n.now\n",
        "                 AND l.epoch = %(epoch)s\n",
        ("tests/test_lease.py::test_renew",),
    ),
    Mutant(
        "renew_any_instance",
        "only the holding process (instance) can renew",
        SQL,
        "WHERE l.lease_name = %(name)s AND l.instance = %(instance)s\n",
        "WHERE l.lease_name = %(name)s\n",
        ("tests/test_lease.py::test_renew",),
    ),
    Mutant(
        "acquire_live_lease",
        "a held row is taken only when free or expired by the database clock",
        SQL,
        "                 AND (l.holder IS NULL\n",
        "                 AND (true\n",
        ("tests/test_lease.py::test_acquire_requires_expected_and_free_or_expired",),
    ),
    Mutant(
        "acquire_ignores_expected",
        "a held row is taken only while it is still the version watched for W",
        SQL,
        "AND l.renewed_at IS NOT DISTINCT FROM %(e_renewed)s::timestamptz",
        "AND true",
        ("tests/test_lease.py::test_acquire_requires_expected_and_free_or_expired",),
    ),
    Mutant(
        "epoch_not_bumped",
        "every acquisition bumps the epoch (fencing token)",
        SQL,
        "                   epoch = l.epoch + 1,\n",
        "                   epoch = l.epoch,\n",
        ("tests/test_lease.py::test_acquire_requires_expected_and_free_or_expired",),
    ),
    Mutant(
        "sync_commit_off",
        "lease statements run with synchronous_commit = on",
        "supervisor/lease/bounded.py",
        '            "-c synchronous_commit=on",\n',
        '            "-c synchronous_commit=off",\n',
        ("tests/test_lease.py::test_lease_sessions_use_synchronous_commit",),
    ),
    Mutant(
        "db_call_unbounded",
        "a database call is bounded by a timeout the supervisor owns",
        "supervisor/lease/bounded.py",
        "done, _ = await asyncio.wait({task}, timeout=max(0.0, timeout))",
        "done, _ = await asyncio.wait({task}, timeout=None)",
        ("tests/test_lease_faults.py::test_blackholed_database_times_out_then_recovers",),
    ),
    # ------------------------------------------------------------ server identity
    Mutant(
        "server_change_no_watch",
        "after a server change the standby takes nothing for W",
        STANDBY,
        "        s.lease.server = ev.server\n        s.lease.server_watch_until = self.now + w\n"
        "        s.lease.seen = None\n",
        "        s.lease.server = ev.server\n        s.lease.seen = None\n",
        ("tests/test_core_rules.py::test_server_change_makes_the_standby_wait_w_even_for_a_free_row",),
    ),
    Mutant(
        "acquire_any_server_sql",
        "an acquire succeeds only on the server the contender watched (SQL)",
        SQL,
        "WHERE %(server)s::text IS NULL OR {server} = %(server)s::text",
        "WHERE true",
        ("tests/test_lease.py::test_observe_names_the_server_and_acquire_needs_that_server",),
    ),
    Mutant(
        "acquire_any_server_core",
        "an acquire names the server the contender watched (core)",
        STANDBY,
        'self.begin_op("acquire", AcquireLease(expected, None, s.lease.server,',
        'self.begin_op("acquire", AcquireLease(expected, None, None,',
        ("tests/test_core_rules.py::test_acquire_names_the_server_it_watched",),
    ),
    Mutant(
        "acquire_any_server_daemon",
        "an acquire names the server the contender watched (daemon)",
        LEASECALLS,
        "epoch = await store.acquire(version, takeover=takeover, server=server,",
        "epoch = await store.acquire(version, takeover=takeover, server=None,",
        ("tests/test_daemon_lease_calls.py::test_acquire_names_the_watched_server",),
    ),
    Mutant(
        "first_read_other_server_trusted",
        "a first read of a row written through another server is watched for W",
        STANDBY,
        "            if ev.exists and ev.row_server != ev.server:\n",
        "            if False:\n",
        ("tests/test_core_rules.py::test_first_read_of_a_row_written_through_another_server_waits_w",),
    ),
    # ------------------------------------------------------------ machine identity
    Mutant(
        "reclaim_trusts_host_name",
        "same-machine reclaim needs the machine identity, not the host name",
        OBS,
        "        same_machine = identity.same_machine(snapshot.holder_machine)\n",
        "        same_machine = snapshot.holder_host == identity.host\n",
        ("tests/test_observation.py",),
    ),
    Mutant(
        "reclaim_trusts_host_name_sql",
        "the reclaim statement checks the machine identity, not the host name",
        SQL,
        "AND l.holder_machine = %(machine)s",
        "AND l.holder_host = %(host)s",
        ("tests/test_lease.py::test_takeover_only_for_same_name_machine_identity_and_process",),
    ),
    Mutant(
        "reclaim_ignores_start_time_sql",
        "the reclaim statement checks the recorded process's start time",
        SQL,
        "AND l.holder_started IS NOT DISTINCT FROM %(dead_started)s::bigint))",
        "AND true))",
        ("tests/test_lease.py::test_takeover_only_for_same_name_machine_identity_and_process",),
    ),
    Mutant(
        "process_alive_ignores_start_time",
        "a process is its pid and its start time (a reused pid is another process)",
        "supervisor/node/machine.py",
        "    if started is not None and start != started:\n",
        "    if False:\n",
        ("tests/test_observation.py",),
    ),
    Mutant(
        "other_identity_reclaimable",
        "a row of another live machine identity is a name conflict, never a takeover",
        OBS,
        "        if same_machine and pid is not None and not alive(",
        "        if pid is not None and not alive(",
        ("tests/test_observation.py",),
    ),
    Mutant(
        "name_conflict_taken",
        "a machineName held by another live identity is logged as a configuration error",
        STANDBY,
        "        self.note_conflict(ev.name_conflict)\n",
        "        self.note_conflict(None)\n",
        ("tests/test_core_rules.py::test_name_conflict_is_an_error_never_a_takeover",),
    ),
    # ------------------------------------------------------------ loud standby, logs, health
    Mutant(
        "db_error_logged_once",
        "a persisting database error is logged again at least once a minute",
        BASE,
        "        if last is None or self.now - last >= self.t.error_repeat:\n",
        "        if last is None:\n",
        ("tests/test_core_rules.py::test_failing_database_is_logged_at_least_once_a_minute_and_shown",),
    ),
    Mutant(
        "log_writes_synchronously",
        "logging never blocks the caller (queue + writer thread)",
        "supervisor/observe/logs.py",
        "    def emit(self, record: logging.LogRecord) -> None:\n",
        "    def emit(self, record: logging.LogRecord) -> None:\n"
        '        self._sink.write(self.format(record) + "\\n")\n'
        "        return\n",
        ("tests/test_logs.py::test_logging_never_waits_for_a_stalled_sink_and_reports_drops",),
    ),
    Mutant(
        "password_not_redacted",
        "a password is never logged",
        "supervisor/observe/logfields.py",
        '    """Replace passwords inside conninfo strings and URIs with "***"."""\n',
        '    """Replace passwords inside conninfo strings and URIs with "***"."""\n'
        "    return text\n",
        ("tests/test_logs.py::test_password_redacted_everywhere",),
    ),
    Mutant(
        "health_ignores_stale_loop",
        "/health fails when the loop is stale",
        "supervisor/observe/http.py",
        "        healthy = view.healthy and not stale\n",
        "        healthy = view.healthy\n",
        ("tests/test_http.py::test_a_stale_loop_fails_health_and_liveness",),
    ),
    Mutant(
        "health_without_lease",
        "/health is 200 only on the host that holds the lease and runs the node",
        "supervisor/observe/http.py",
        "            return self.lease_held and self.node_running and self.node_ready\n",
        "            return self.node_running and self.node_ready\n",
        ("tests/test_http.py::test_health_matrix",),
    ),
    Mutant(
        "health_ignores_readiness",
        "/health is 200 only once the holder's node is ready (node.readiness)",
        "supervisor/observe/http.py",
        "            return self.lease_held and self.node_running and self.node_ready\n",
        "            return self.lease_held and self.node_running\n",
        ("tests/test_http.py::test_health_waits_for_readiness",),
    ),
    Mutant(
        "not_ready_is_no_crash",
        "a node not ready within startTimeout is a failed start (counted as a crash)",
        LIFECYCLE,
        "        expected = s.node.stop_sent and not"
        ' s.node.kill_is_crash\n        self.log("node_exited"',
        '        expected = s.node.stop_sent\n        self.log("node_exited"',
        ("tests/test_core_rules.py::test_a_node_that_never_becomes_ready_is_a_failed_start",),
    ),
    Mutant(
        "corda_lock_row_without_our_lease",
        "Corda's own guard row is made takeable only while this process holds the lease",
        "supervisor/lease/cordarow.py",
        '            return "not_holder"\n',
        '            pass  # mutant\n',
        ("tests/test_corda_lock_row.py::test_holder_makes_a_fresh_foreign_row_takeable_and_nothing_else",),
    ),
    Mutant(
        "standby_ignores_shared_dirs",
        "a standby whose shared directories fail takes nothing",
        STANDBY,
        "                or s.shared_problem is not None\n",
        "                or False\n",
        ("tests/test_shared_dirs.py::test_a_standby_without_its_shared_directory_never_takes_the_lease",),
    ),
    Mutant(
        "start_without_shared_dirs",
        "no node starts while its shared directories fail their probe",
        NODERUN,
        '        if problem is not None:\n            self.post(SharedDirsChecked(problem))\n',
        '        if False:\n            self.post(SharedDirsChecked(problem))\n',
        ("tests/test_shared_dirs.py::test_a_holder_whose_shared_directory_fails_does_not_start_and_gives_the_lease_up",),
    ),
    Mutant(
        "standby_takes_while_paused",
        "while the pair is paused standbys take nothing",
        SQL,
        "                 AND l.paused_at IS NULL\n",
        "",
        ("tests/test_lease_maintenance.py::test_a_paused_lease_cannot_be_acquired",),
    ),
    Mutant(
        "handover_target_ignored",
        "after `handover --to M` only M may take the released lease",
        SQL,
        "                 AND (l.handover_to IS NULL OR l.handover_to = %(holder)s\n",
        "                 AND (TRUE OR l.handover_to = %(holder)s\n",
        ("tests/test_lease_maintenance.py::"
         "test_handover_to_a_machine_reserves_the_released_lease_for_2w",),
    ),
    Mutant(
        "pre_stop_on_a_lost_lease",
        "a stop forced by a lost lease never waits for the preStop hook",
        "supervisor/core/base.py",
        "        self.actions.append(StopNode(grace, planned=reason in "
        '("shutdown", "handover")))\n',
        "        self.actions.append(StopNode(grace, planned=True))\n",
        ("tests/test_hooks.py::test_no_pre_stop_when_the_lease_is_lost",),
    ),
    Mutant(
        "standby_core_ignores_pause",
        "while the pair is paused standbys take nothing (the core, besides the statement)",
        STANDBY,
        "                or ev.paused\n",
        "                or False\n",
        ("tests/test_core_rules.py::"
         "test_a_standby_takes_nothing_while_paused_or_reserved_for_another",),
    ),
    Mutant(
        "paused_holder_restarts",
        "while the pair is paused the holder does not restart a crashed node",
        LIFECYCLE,
        "        if s.paused and s.lease_enabled:\n",
        "        if False:\n",
        ("tests/test_core_rules.py::"
         "test_a_paused_holder_neither_restarts_nor_hands_over_until_resumed",),
    ),
    # ------------------------------------------------------------ operator safety
    Mutant(
        "handover_without_a_taker",
        "handover refuses (node untouched) when no other member could take over",
        "supervisor/cli/operator.py",
        "    if candidates:\n        return None\n    who =",
        "    if True:\n        return None\n    who =",
        ("tests/test_operator.py::test_status_lists_members_and_handover_refuses_without_a_taker",),
    ),
    Mutant(
        "stalled_holder_shown_live",
        "status calls a holder whose supervisor stopped renewing not live",
        "supervisor/cli/show.py",
        "    renewing = (unexpired and renewed_ago is not None\n",
        "    renewing = (unexpired or renewed_ago is not None\n",
        ("tests/test_operator.py::test_a_holder_that_stopped_renewing_is_not_live",),
    ),
    Mutant(
        "refused_login_waited_out",
        "a refused database login at start is exit 78, not waited out for ever",
        "supervisor/lease/startup.py",
        REFUSED_LOGIN,
        "        return None  # waited out\n" + REFUSED_LOGIN,
        ("tests/test_startup_errors.py::test_refused_login_exits_78_naming_user_and_password_source",),
    ),
    # ------------------------------------------------------------ database fencing
    Mutant(
        "fence_one_call",
        "a fence that just locked a role out calls again until no session slipped in",
        DBFENCE,
        '        if all(r.action == "locked" and r.sessions == 0 for r in answer):\n',
        "        if True:\n",
        (f"{FENCE_TESTS}::test_the_holder_locks_the_other_role_out_and_ends_its_sessions",),
    ),
    Mutant(
        "fence_no_terminate",
        "the fence ends the other node role's sessions",
        "supervisor/lease/fence_sql.py",
        "            PERFORM pg_terminate_backend(s.pid);\n",
        "            NULL;\n",
        (f"{FENCE_TESTS}::test_the_holder_locks_the_other_role_out_and_ends_its_sessions",),
    ),
    Mutant(
        "fence_no_nologin",
        "the fence locks the other node role out of new logins",
        "supervisor/lease/fence_sql.py",
        "            EXECUTE format('ALTER ROLE %I NOLOGIN', r.name);\n",
        "            NULL;\n",
        (f"{FENCE_TESTS}::test_the_holder_locks_the_other_role_out_and_ends_its_sessions",),
    ),
    Mutant(
        "fence_without_the_lease",
        "only the holder of the lease at that epoch may lock roles out",
        "supervisor/lease/fence_sql.py",
        "clock_timestamp() FOR SHARE;\n    IF NOT FOUND THEN\n",
        "clock_timestamp() FOR SHARE;\n    IF false THEN\n",
        (f"{FENCE_TESTS}::test_only_the_holder_at_that_epoch_can_fence",),
    ),
    Mutant(
        "fence_outside_the_group",
        "the fence locks out only members of the node group",
        "supervisor/lease/fence_check.py",
        "        ELSIF NOT pg_has_role(x.oid, group_name, 'MEMBER') THEN\n",
        "        ELSIF false THEN\n",
        (f"{FENCE_TESTS}::test_a_role_outside_the_node_group_is_never_fenced",),
    ),
    Mutant(
        "node_role_not_acting_as_group",
        "each node role acts as the node group, so the other host's node can use the tables "
        "Corda created (a failover starts a node)",
        DBFENCE,
        '                  f"ALTER ROLE {ident(r)} SET role = {literal(node_group)}"]\n',
        "                  ]\n",
        ("tests/test_corda_fencing.py::"
         "test_a_frozen_jvm_node_is_fenced_and_the_other_role_uses_cordas_tables[lab]",),
    ),
    Mutant(
        "node_starts_unfenced",
        "with fencing.required, a holder whose fence failed does not start its node",
        NODERUN,
        "            problem = await self.fencer.fence(action.epoch)\n"
        "            if problem is not None:\n",
        "            problem = await self.fencer.fence(action.epoch)\n            if False:\n",
        (f"{FENCE_TESTS}::test_a_holder_whose_fence_fails_does_not_start_its_node[required]",),
    ),
    Mutant(
        "standby_takes_over_unable_to_fence",
        "a standby that cannot fence takes no lease",
        STANDBY,
        "                or s.fencing_problem is not None\n",
        "                or False\n",
        ("tests/test_core_rules.py::test_a_standby_that_cannot_fence_takes_nothing_and_says_why",),
    ),
    # database fencing: what a supervisor's database role cannot subvert
    Mutant(
        "fence_ownership_unchecked",
        "fencing refuses to run while the supervisor's role owns (or is a member of the "
        "owner of) a table the fence functions read",
        "supervisor/lease/fence_check.py",
        "        IF pg_has_role(me, x.relowner, 'MEMBER') THEN\n",
        "        IF false THEN\n",
        ("tests/test_db_attacks.py::test_attack_where_the_supervisor_owns_the_tables"
         "[rls_policy]",),
    ),
    Mutant(
        "fence_access_unchecked",
        "the fence acts only for a lease the access table names for the caller",
        "supervisor/lease/fence_check.py",
        "    IF NOT EXISTS (SELECT 1 FROM ONLY @ACCESS@ a\n",
        "    IF false AND NOT EXISTS (SELECT 1 FROM ONLY @ACCESS@ a\n",
        ("tests/test_db_attacks.py::test_attack_as_schema_prints_it[other_pairs_row]",),
    ),
    Mutant(
        "fence_other_leases_roles",
        "the fence locks out only roles bound to its own lease",
        "supervisor/lease/fence_sql.py",
        "             WHERE b.lease_name = p_lease\n",
        "             WHERE true\n",
        ("tests/test_db_fence_rules.py::"
         "test_a_fence_touches_only_the_roles_bound_to_its_own_lease",),
    ),
    Mutant(
        "fence_done_when_locked",
        "the fence is done only when one end call found every other role locked AND ended "
        "no session (a signalled backend that has not exited can still commit)",
        DBFENCE,
        '        if all(r.action == "locked" and r.sessions == 0 for r in answer):\n',
        '        if all(r.action == "locked" for r in answer):\n',
        ("tests/test_db_fence_rules.py::"
         "test_a_signalled_session_that_has_not_exited_is_found_again",),
    ),
    Mutant(
        "fence_one_role_for_both",
        "a role both hosts' nodes use (no other role bound) cannot be fenced: refused",
        "supervisor/lease/fence_check.py",
        "    IF others = 0 THEN\n",
        "    IF false THEN\n",
        ("tests/test_db_fence_rules.py::test_one_role_on_both_hosts_cannot_be_fenced",),
    ),
    Mutant(
        "fence_admin_option_unchecked",
        "PostgreSQL 16+: the confirm check names the missing ADMIN OPTION",
        "supervisor/lease/fence_check.py",
        "        ELSIF current_setting('server_version_num')::integer >= 160000 AND NOT "
        "EXISTS (\n",
        "        ELSIF false AND NOT EXISTS (\n",
        ("tests/test_db_fence_rules.py::"
         "test_postgres_16_needs_admin_option_on_every_bound_role",),
    ),
    Mutant(
        "fence_end_holds_the_row",
        "the end call holds no lock on the lease row while it waits (renewals go on)",
        "supervisor/lease/fence_sql.py",
        "l.expires_at > clock_timestamp();\n",
        "l.expires_at > clock_timestamp() FOR SHARE;\n",
        ("tests/test_db_fence_rules.py::test_a_renewal_is_not_blocked_while_the_end_call_waits",),
    ),
    Mutant(
        "fence_trusts_any_trigger",
        "a trigger on a table the fence functions read is allowed only when a superuser or "
        "the owner role wrote its code (no WHEN clause)",
        "supervisor/lease/fence_check.py",
        "                    OR NOT (o.rolsuper OR f.proowner = owner_id))\n",
        "                    OR false)\n",
        ("tests/test_db_attacks.py::test_attack_where_the_supervisor_owns_the_tables[trigger]",),
    ),
    Mutant(
        "fenced_without_a_fence",
        "fenced(epoch) is True only once a fence for that epoch completed (it gates "
        "rewriting Corda's lock row)",
        "supervisor/daemon/fencer.py",
        "        return epoch in self._fenced\n",
        "        return True\n",
        ("tests/test_db_fence_rules.py::"
         "test_fenced_says_whether_a_fence_for_that_epoch_completed[not-required]",),
    ),
    Mutant(
        "fence_lock_ends_sessions",
        "NOLOGIN is committed before any session is ended: the lock call ends none",
        "supervisor/lease/fence_sql.py",
        "            action := 'locked';\n            UPDATE ONLY",
        "            action := 'locked';\n            PERFORM pg_terminate_backend(a.pid) "
        "FROM pg_stat_activity a WHERE a.usename = r.name;\n            UPDATE ONLY",
        ("tests/test_db_fence_rules.py::"
         "test_the_lock_call_commits_nologin_and_the_end_call_ends_the_sessions",),
    ),
    # ------------------------------------------------------------ the status port, TLS
    Mutant(
        "status_open_without_token",
        "with health.tokenFile, /status and /metrics need the bearer token",
        "supervisor/observe/http.py",
        "    return hmac.compare_digest(given.strip().encode(), token.encode())\n",
        "    return True\n",
        ("tests/test_http_guard.py::test_authorized",
         "tests/test_http_guard.py::test_internals_need_the_token"),
    ),
    Mutant(
        "slow_client_holds_a_thread",
        "a client that trickles its request is cut off at the request deadline",
        "supervisor/observe/server.py",
        "            if remaining <= 0:\n"
        "                raise TimeoutError(\"request not complete in time\")\n"
        "            self._sock.settimeout(remaining)\n",
        "            self._sock.settimeout(10.0)\n",
        ("tests/test_http_guard.py::test_a_slow_client_is_cut_off_while_health_answers",),
    ),
    Mutant(
        "tls_failure_waited_out",
        "a TLS verification failure at start is a configuration error (exit 78)",
        "supervisor/lease/startup.py",
        "        if marker in text:\n            return (f\"TLS to the database failed",
        "        if False:\n            return (f\"TLS to the database failed",
        ("tests/test_tls.py::test_tls_failure_at_start_exits_78_naming_it",),
    ),
    # ------------------------------------------------------------ configuration
    Mutant(
        "wait_not_above_update",
        "W > U or the configuration is refused",
        CONFIG,
        "    if wait <= update:\n",
        "    if False:\n",
        ("tests/test_config_timing.py::test_wait_must_exceed_update",),
    ),
    Mutant(
        "no_room_for_a_renewal",
        "W - M - U must leave room for one renewal or the configuration is refused",
        CONFIG,
        "    if window < MIN_RENEWAL_WINDOW:\n",
        "    if False:\n",
        ("tests/test_config_timing.py::test_no_room_for_one_renewal_is_refused",),
    ),
    Mutant(
        "no_default_margin",
        "the fencing margin M defaults to min(2 s, W/10)",
        CONFIG,
        '    margin = block.duration("fencingMargin", min(2.0, wait / 10))\n',
        '    margin = block.duration("fencingMargin", 0.0)\n',
        ("tests/test_config.py::test_base_config_defaults",),
    ),
    Mutant(
        "queued_operation_takes_a_dropped_connection",
        "an operation queued on a channel whose connection was dropped (one call's server "
        "error) runs on a new connection (a refused fencing check must not fail the "
        "operations queued behind it)",
        "supervisor/lease/channel.py",
        "            if conn is self._conn and not (conn.closed or conn.broken):\n",
        "            if True:\n",
        ("tests/test_lease_faults.py::"
         "test_a_failing_call_does_not_break_calls_queued_behind_it",),
    ),
    Mutant(
        "connect_bounded_by_its_call",
        "connecting has a budget of its own: an attempt outlives the call that gave up on "
        "it (a multi-host URL's silent first host costs the calls of one connect timeout, "
        "not every call)",
        "supervisor/lease/connects.py",
        "        self._attempts.append(self._start())\n",
        "        return await self._open()\n",
        ("tests/test_multihost_url.py::"
         "test_a_silent_first_host_costs_the_calls_of_one_connect_timeout_not_every_call",),
    ),
    # ------------------------------------------------------------ one conversation per concern
    Mutant(
        "lease_statements_share_the_side_connection",
        "lease statements run on a connection of their own, never behind a side operation",
        "supervisor/lease/store.py",
        '        self._side = Channel("side", self._open, self._bounded, '
        'single_statements=False,\n'
        '                             connect_budget=budget, idle_close=SIDE_IDLE_CLOSE)\n',
        "        self._side = self._lease\n",
        ("tests/test_lease_channels.py::test_a_lease_statement_never_waits_for_a_side_operation",),
    ),
    Mutant(
        "channel_lent_to_two_operations",
        "a channel lends its connection to one operation at a time (a transaction of one is "
        "never shared with a statement of another)",
        "supervisor/lease/channel.py",
        "            await busy.acquire()\n",
        "            await busy.acquire()\n            busy.release()\n",
        ("tests/test_lease_channels.py::test_side_operations_do_not_share_a_connection_either",
         "tests/test_lease_channels.py::"
         "test_a_renewal_is_committed_when_a_side_transaction_rolls_back"),
    ),
    Mutant(
        "lease_statement_counted_inside_a_transaction",
        "a lease statement whose connection is not idle afterwards has failed (not committed)",
        "supervisor/lease/store.py",
        "        channel.check_idle(conn, what)\n",
        "",
        ("tests/test_lease_channels.py::"
         "test_a_lease_statement_left_inside_a_transaction_has_failed",),
    ),
    Mutant(
        "renewal_audit_blind",
        "harness: the renewal-durability check reports a logged write the audit lacks",
        "tests/harness/renewal_audit.py",
        "            if (instance, epoch, at) not in committed]\n",
        "            if False]\n",
        ("tests/test_renewal_audit.py::"
         "test_committed_writes_pass_and_rolled_back_ones_are_reported",),
    ),
    Mutant(
        "renewal_audit_misses_new_tables",
        "harness: a lease table created after the audit was installed is audited too",
        "tests/harness/renewal_audit.py",
        "CREATE EVENT TRIGGER {audit}_new_tables ON ddl_command_end WHEN TAG IN ('CREATE TABLE')\n"
        "    EXECUTE FUNCTION public.{audit}_new_tables();\n",
        "",
        ("tests/test_renewal_audit.py::"
         "test_a_lease_table_a_least_privilege_role_creates_is_audited",),
    ),
    Mutant(
        "fakestore_acquire_ignores_the_version",
        "harness: the in-memory lease store's acquire is a compare-and-set on the version "
        "the caller watched",
        "tests/harness/fakestore.py",
        "            return False  # not the version the caller watched\n",
        "            pass\n",
        ("tests/test_fakestore.py::"
         "test_the_first_acquire_inserts_and_a_held_row_is_taken_only_once_expired",),
    ),
    Mutant(
        "fakestore_acts_for_anyone",
        "harness: the in-memory lease store renews and releases only for this instance and "
        "epoch",
        "tests/harness/fakestore.py",
        "        return r.instance == self.identity.instance and r.epoch == epoch\n",
        "        return True\n",
        ("tests/test_fakestore.py::"
         "test_renew_and_release_act_only_for_this_instance_and_epoch",),
    ),
    Mutant(
        "chaos_durability_blind",
        "harness: the chaos suite reports a write a supervisor acted on that was never "
        "committed",
        "tests/chaos/durability.py",
        "                found = (w.instance, w.epoch, w.renewed_at) in audit\n",
        "                found = True\n",
        ("tests/chaos/test_durability.py::"
         "test_writes_acted_on_but_not_committed_are_found_once",),
    ),
    Mutant(
        "chaos_lease_cover_too_long",
        "harness: a committed write covers its node for W, not a moment longer",
        "tests/chaos/analysis.py",
        "    cover = checker.merge_intervals([*((s, s + w) for s in sent),\n",
        "    cover = checker.merge_intervals([*((s, s + 2 * w) for s in sent),\n",
        ("tests/chaos/test_durability.py::"
         "test_a_run_is_covered_only_within_w_of_a_committed_write",),
    ),
    # ------------------------------------------------------------ rules an audit broke
    Mutant(
        "acquisition_timed_at_the_answer",
        "an acquisition's t is when the acquire was sent, in the daemon too (a late answer "
        "must not move the kill deadline past what the row allows)",
        LEASECALLS,
        "                return LeaseAcquired(epoch=epoch, sent_at=sent_at)\n",
        "                return LeaseAcquired(epoch=epoch, sent_at=self.clock())\n",
        ("tests/test_daemon_lease_calls.py::test_an_acquisition_counts_from_when_it_was_sent",),
    ),
    Mutant(
        "release_without_its_epoch",
        "a release carries its epoch: a late release of an old epoch frees nothing",
        SQL,
        "                   WHERE lease_name = %(name)s AND instance = %(instance)s\n"
        "                     AND epoch = %(epoch)s\n"
        "                   RETURNING lease_name)",
        "                   WHERE lease_name = %(name)s AND instance = %(instance)s\n"
        "                   RETURNING lease_name)",
        ("tests/test_lease_epochs.py::test_a_late_release_of_an_old_epoch_frees_nothing",),
    ),
    Mutant(
        "crash_loop_forgets_long_runs",
        "a crash loop counts every crash in the window, whatever the node's runtime",
        LIFECYCLE,
        "            s.crashes.consecutive = 0\n        s.crashes.consecutive += 1\n",
        "            s.crashes.consecutive = 0\n            s.crashes.times = ()\n"
        "        s.crashes.consecutive += 1\n",
        ("tests/test_core_deadlines.py::"
         "test_a_crash_loop_counts_every_crash_whatever_its_runtime",),
    ),
    Mutant(
        "corda_row_rewritten_without_a_fence",
        "Corda's lock row is set back only after this acquisition's database fence completed",
        NODERUN,
        '            if self.fencer is None or not self.fencer.fenced(epoch):\n',
        '            if False:\n',
        ("tests/test_corda_lock_row.py::"
         "test_without_a_database_fence_cordas_row_is_left_alone",
         "tests/test_corda_lock_row.py::"
         "test_a_frozen_hosts_node_that_keeps_its_row_fresh_keeps_the_new_node_out"),
    ),
    # ------------------------------------------------------------ deadlines count a suspend
    Mutant(
        "daemon_counts_monotonic_time",
        "the daemon's deadlines run on CLOCK_BOOTTIME, which counts a suspend",
        DAEMON,
        "                 identity: Identity | None = None, clock: Callable[[], float] = "
        "clock_now,\n",
        "                 identity: Identity | None = None, clock: Callable[[], float] = "
        "__import__('time').monotonic,\n",
        ("tests/test_daemon_lease_calls.py::"
         "test_a_suspend_longer_than_the_lease_ends_the_run_at_once",),
    ),
    Mutant(
        "guard_sleeps_past_a_suspend",
        "the guard looks at its deadline's clock at least every MAX_WAIT (a poll timeout "
        "runs on CLOCK_MONOTONIC, which a suspend stops)",
        GUARD,
        "_MAX_WAIT_MS = clock.MAX_WAIT * 1000\n",
        "_MAX_WAIT_MS = 60_000.0\n",
        ("tests/test_guard.py::"
         "test_a_suspend_past_the_deadline_kills_the_node_as_the_guard_resumes",),
    ),
    Mutant(
        "node_fence_sleeps_past_a_suspend",
        "the supervisor's own fence looks at the deadline at least every MAX_WAIT",
        NODE,
        "        delay = min(max(0.0, self._deadline - clock.now()), clock.MAX_WAIT)\n",
        "        delay = max(0.0, self._deadline - clock.now())\n",
        ("tests/test_node_fence.py::"
         "test_a_suspend_past_the_deadline_kills_the_node_as_this_process_resumes",),
    ),
    # ------------------------------------------------------------ the one table of states
    Mutant(
        "transition_unchecked",
        "every change of state goes through the table: one it does not allow is refused",
        "supervisor/core/transitions.py",
        "    if to is not s.state and to not in ALLOWED[s.state]:\n",
        "    if False:\n",
        ("tests/test_core_transitions.py::"
         "test_a_change_the_table_does_not_allow_is_refused",),
    ),
    Mutant(
        "transition_table_drops_the_crash_loop_cooldown",
        "the table allows every change the rules make (a crash loop cools down after its "
        "release)",
        "supervisor/core/transitions.py",
        "    State.STOPPING: frozenset({State.STANDBY, State.COOLDOWN, State.EXITED}),\n",
        "    State.STOPPING: frozenset({State.STANDBY, State.EXITED}),\n",
        ("tests/test_core.py::"
         "test_crash_restarts_with_backoff_under_same_epoch_then_crash_loop_releases",),
    ),
    Mutant(
        "reaper_kills_reused_numbers",
        "harness: a test's teardown never kills a process that reused a number it recorded",
        "tests/harness/proc.py",
        "        return (leader is not None and not _exited(leader)) or not pid_alive(pgid)\n",
        "        return True\n",
        ("tests/test_proc.py::"
         "test_the_reaper_leaves_alone_a_process_that_reused_a_tracked_number",),
    ),
    Mutant(
        "stale_sweep_signals_a_reused_postmaster_pid",
        "harness: the stale-cluster sweep signals no process that got a dead postmaster's number",
        "tests/harness/pgserver.py",
        "        if not _postmaster_runs_in(stale.datadir):\n",
        "        if False:\n",
        ("tests/test_proc.py::"
         "test_the_stale_cluster_sweep_signals_no_process_that_reused_the_postmaster_pid",),
    ),
    # ------------------------------------------------------------ node side
    Mutant(
        "alive_eperm_counted_dead",
        "EPERM from signal 0 is a live process of another user, never a dead one",
        "supervisor/node/machine.py",
        "    except PermissionError:\n        return True\n",
        "    except PermissionError:\n        return False\n",
        ("tests/test_observation.py::"
         "test_another_users_process_is_alive_though_it_cannot_be_signalled",
         "tests/test_observation.py::test_another_users_hidden_holder_is_a_conflict"),
    ),
    Mutant(
        "alive_unreadable_start_time_counted_dead",
        "a process /proc hides or cannot show (hidepid, EACCES) is alive: no reclaim",
        "supervisor/node/machine.py",
        "        return _signal_probe(pid)  # what we cannot see is alive\n",
        "        return False\n",
        ("tests/test_observation.py::test_a_process_proc_does_not_show_is_alive",),
    ),
    Mutant(
        "exit_sweep_skipped",
        "without a cgroup, a node's exit is reported only after the marker sweep killed "
        "what is left of the run",
        NODE,
        "            await sweep_until_clean(marks.key, marker_sweep(marks.key), "
        "marks.sweep_timeout)\n",
        "            pass\n",
        ("tests/test_node_sweep.py::test_a_setsid_child_is_dead_before_the_exit_is_reported",),
    ),
    Mutant(
        "exit_reported_with_survivors",
        "a run is over when its last process is gone: survivors of SIGKILL hold the exit",
        "supervisor/node/sweep.py",
        "            if swept.clean:\n                break\n",
        "            if True:\n                break\n",
        ("tests/test_node_sweep.py::test_a_child_that_survives_sigkill_holds_the_exit",),
    ),
    Mutant(
        "cgroup_exit_reported_with_survivors",
        "with a cgroup, a run is over only when its cgroup is empty (killed again and again)",
        "supervisor/node/sweep.py",
        "        if not _populated(path):\n            break\n",
        "        break\n",
        ("tests/test_node_sweep.py::"
         "test_with_a_cgroup_a_child_that_survives_sigkill_holds_the_exit",),
    ),
    Mutant(
        "start_ignores_sweep_survivors",
        "a stale-node sweep that is not clean (a survivor, an unreadable process) starts "
        "no node",
        "supervisor/node/launch.py",
        "    if not swept.clean:\n        problem = f\"stale-node sweep not clean",
        "    if False:\n        problem = f\"stale-node sweep not clean",
        ("tests/test_node_sweep.py::test_a_sweep_that_is_not_clean_starts_no_node",
         "tests/test_node_sweep.py::test_a_frozen_stale_node_is_a_survivor_and_no_node_starts"),
    ),
    Mutant(
        "unreadable_environment_ignored",
        "a process that may be ours whose environment cannot be read makes the sweep unclean",
        "supervisor/node/sweep.py",
        "            if exc.errno not in _GONE and _may_be_ours(int(name), proc_root, euid):\n",
        "            if False:\n",
        ("tests/test_node_sweep.py::"
         "test_an_unreadable_environment_of_ours_makes_the_sweep_unclean",),
    ),
    Mutant(
        "instance_lock_not_taken",
        "the daemon takes its instance lock before anything else; a second run exits 78",
        "supervisor/daemon/__main__.py",
        "        problem = take_instance_lock(config)\n",
        "        problem = None\n",
        ("tests/test_instancelock.py::"
         "test_a_second_run_of_a_running_node_exits_78_and_touches_nothing",),
    ),
    Mutant(
        "instance_lock_not_checked",
        "the instance lock excludes: a writer takes a write lock",
        "supervisor/node/instancelock.py",
        "(fcntl.LOCK_EX if writable else fcntl.LOCK_SH)",
        "(fcntl.LOCK_SH)",
        ("tests/test_instancelock.py::test_the_holder_is_named_and_the_lock_ends_with_it",),
    ),
    Mutant(
        "instance_lock_file_kept_by_root",
        "a lock file root creates goes to the working directory's owner (the service user "
        "can still write-lock it)",
        "supervisor/node/instancelock.py",
        "                os.fchown(fd, owner.st_uid, owner.st_gid)\n",
        "                pass\n",
        ("tests/test_instancelock.py::test_a_file_root_made_is_handed_to_the_directory_owner",),
    ),
    Mutant(
        "hook_spawned_on_the_loop",
        "a hook is spawned (fork and exec) off the loop: a hung spawn never delays it",
        "supervisor/node/hooks.py",
        '        return await in_thread(work, timeout, f"hook-spawn-{name}")\n',
        "        return work()\n",
        ("tests/test_hooks.py::test_a_hook_whose_spawn_hangs_never_delays_the_loop",),
    ),
    Mutant(
        "late_hook_left_running",
        "a hook that starts after its spawn was given up on is killed at once",
        "supervisor/node/hooks.py",
        "        if late:\n            _kill_group(proc)\n",
        "        if False:\n            _kill_group(proc)\n",
        ("tests/test_hooks.py::test_a_hook_whose_spawn_hangs_never_delays_the_loop",),
    ),
    # ------------------------------------------------------------ the installer
    Mutant(
        "installer_stops_corda_service",
        "systemd/install.sh stops and disables a corda.service only when given "
        "--take-over-corda-service",
        INSTALLER,
        '    if [ "$corda" = present ] && [ "$take_over" = yes ]; then\n',
        '    if [ "$corda" = present ]; then\n',
        (f"{INSTALL_TESTS}::test_a_running_corda_service_is_left_alone",),
    ),
    Mutant(
        "installer_enables_beside_corda_service",
        "systemd/install.sh enables the supervisor only when no corda.service is left on "
        "the host (never two units running one node)",
        INSTALLER,
        '    if [ "$corda" = present ] && [ "$take_over" = no ]; then\n'
        '        step "systemd: systemctl daemon-reload"\n',
        '    if false; then\n'
        '        step "systemd: systemctl daemon-reload"\n',
        (f"{INSTALL_TESTS}::test_a_running_corda_service_is_left_alone",),
    ),
    Mutant(
        "installer_acts_while_planning",
        "systemd/install.sh changes nothing before its plan is printed whole (and nothing "
        "at all with --dry-run)",
        INSTALLER,
        'doing() { [ "$phase" = do ]; }\n',
        "doing() { true; }\n",
        (f"{INSTALL_TESTS}::test_the_dry_run_prints_the_whole_plan_and_changes_nothing",
         f"{INSTALL_TESTS}::test_a_running_corda_service_is_left_alone"),
    ),
    Mutant(
        "installer_overwrites_edited_config",
        "a second run of systemd/install.sh leaves supervisor.conf as the operator edited it",
        INSTALLER,
        'if [ -e "$conf" ]; then\n    conf_act=keep\n',
        'if false; then\n    conf_act=keep\n',
        (f"{INSTALL_TESTS}::test_a_second_run_keeps_what_the_operator_edited",),
    ),
    Mutant(
        "dba_tables_in_the_postgres_database",
        "the DBA's commands (docs/operations.md) run what `schema` prints in the "
        "lease's database (psql -d <database>), not in the superuser's",
        "docs/operations.md",
        "-U postgres -d <database> -f schema-a.sql\n",
        "-U postgres -f schema-a.sql\n",
        ("tests/test_dba_setup.py::test_every_psql_after_the_first_names_the_database",
         "tests/test_dba_setup.py::test_the_dba_commands_as_written_set_up_a_pair"),
    ),
    # ------------------------------------------------------------ alert rules
    Mutant(
        "two_holders_alert_split_by_host",
        "alerts: two supervisors reporting one lease held at once fire CordaHaTwoHolders",
        ALERTS,
        "          count by (lease) (\n",
        "          count by (lease, instance) (\n",
        ("tests/test_alerts.py::test_the_recorded_runs_replay",),
    ),
    Mutant(
        "no_holder_alert_silenced",
        "alerts: a pair whose lease nobody holds for longer than a failover fires "
        "CordaHaNoHolder",
        ALERTS,
        "          ) == 0\n        for: 2m\n",
        "          ) < 0\n        for: 2m\n",
        ("tests/test_alerts.py::test_the_recorded_runs_replay",),
    ),
    Mutant(
        "database_unreachable_alert_inverted",
        "alerts: a supervisor whose lease calls get no answer fires "
        "CordaHaDatabaseUnreachable, one that reaches the database does not",
        ALERTS,
        "          (corda_ha_database_reachable == 0)\n",
        "          (corda_ha_database_reachable == 1)\n",
        ("tests/test_alerts.py::test_the_recorded_runs_replay",),
    ),
    Mutant(
        "fencing_ready_ignores_the_problem",
        "metrics: corda_ha_fencing_ready is 0 while the fencing check reports a problem "
        "(CordaHaFencingNotReady reads it)",
        "supervisor/observe/metrics.py",
        '                               else 0 if fencing.get("problem") is not None else 1)\n',
        "                               else 1)\n",
        ("tests/test_alert_metrics.py",),
    ),
    # ------------------------------------------------------------ the operator's road
    Mutant(
        "missing_grant_does_not_block_start",
        "run refuses to contend (exit 78) when a privilege the lease needs is missing on "
        "existing tables, naming the table, the privilege and the GRANT",
        "supervisor/daemon/loop.py",
        "        if blocking:\n            return \"; \".join(blocking)\n",
        "        if False:\n            return \"; \".join(blocking)\n",
        ("tests/test_privileges.py::"
         "test_run_with_a_grant_missing_on_existing_tables_exits_78_naming_it",),
    ),
    Mutant(
        "lost_privilege_reported_unreachable",
        "a privilege lost while running is reported as missing (log, /status, status, "
        "metric), not as an unreachable database",
        "supervisor/daemon/leasecalls.py",
        "missing_privilege=e.sqlstate == INSUFFICIENT_PRIVILEGE)",
        "missing_privilege=False)",
        ("tests/test_privileges.py::"
         "test_a_privilege_lost_while_running_is_reported_as_missing_not_unreachable",),
    ),
    Mutant(
        "online_check_skips_the_probe",
        "check-config --online exits 78 on a missing privilege, naming the GRANT",
        "supervisor/cli/online.py",
        "    if blocking:\n        return EX_CONFIG\n",
        "    if False:\n        return EX_CONFIG\n",
        (ROAD + "test_check_config_online_accepts_a_pair_set_up_as_schema_prints",),
    ),
    Mutant(
        "durations_not_rounded",
        "durations in logs are rounded to the millisecond",
        "supervisor/observe/logfields.py",
        "        return round(value, 3)\n",
        "        return value\n",
        ("tests/test_logs.py::test_durations_are_rounded_to_the_millisecond",),
    ),
    Mutant(
        "handover_to_a_stranger",
        "handover --to a machine that is no member of the pair is refused by name (exit 4)",
        "supervisor/cli/operator.py",
        "    if to is not None and to not in {m.member.machine_name for m in members}:\n",
        "    if False:\n",
        (ROAD + "test_handover_to_a_host_that_is_no_member_is_refused_by_name",),
    ),
    Mutant(
        "env_file_ignored",
        "the operator's commands read the unit's environment file (or --env-file's)",
        "supervisor/cli/command.py",
        "        _read_env_file(args.env_file, command)\n",
        "        None\n",
        (ROAD + "test_status_takes_the_password_from_the_env_file_and_says_so",),
    ),
    Mutant(
        "closed_pipe_traceback",
        "output into a pipe closed early ends with 141, no traceback",
        "supervisor/cli/command.py",
        "    except BrokenPipeError:\n",
        "    except KeyboardInterrupt:\n",
        (ROAD + "test_output_into_a_closed_pipe_ends_quietly",),
    ),
    Mutant(
        "gone_member_shown_present",
        "status shows a member that left as gone, with when it was last seen",
        "supervisor/cli/show.py",
        '        if m.get("gone"):\n',
        "        if False:\n",
        (ROAD + "test_a_member_that_left_is_shown_gone_in_local_time_then_removed",),
    ),
    Mutant(
        "duplicate_directory_warning",
        "check-config names a problem once: no warning for what is also an error",
        "supervisor/cli/command.py",
        '        if not any(p.key and warning.startswith(f"{p.key} ") for p in problems):\n',
        "        if True:\n",
        (ROAD + "test_check_config_names_a_missing_directory_once",),
    ),
    Mutant(
        "busy_port_blames_the_main_address",
        "a health address that is taken is named with its own keys",
        "supervisor/observe/http.py",
        "                raise AddressUnavailable(e, address, internal=index == 1) from e\n",
        "                raise AddressUnavailable(e, address, internal=False) from e\n",
        ("tests/test_startup_errors.py::test_busy_health_port_exits_78_naming_the_address_taken",),
    ),
    Mutant(
        "paused_crash_shows_backoff",
        "a node that crashed while the pair is paused is shown paused, not backoff",
        "supervisor/core/lifecycle.py",
        "            change(s, State.PAUSED)\n",
        "            change(s, State.BACKOFF)\n",
        ("tests/test_core_rules.py::"
         "test_a_paused_holder_neither_restarts_nor_hands_over_until_resumed",),
    ),
    Mutant(
        "pause_lets_a_due_restart_run",
        "a restart that was due when the pair is paused waits for resume",
        "supervisor/core/holder.py",
        "            if s.state == State.BACKOFF and s.crashes.restart_at is not None:\n",
        "            if False:\n",
        ("tests/test_core_rules.py::"
         "test_a_restart_that_was_due_waits_for_resume_once_the_pair_is_paused",),
    ),
    Mutant(
        "async_replication_not_two_nodes",
        "asynchronous replication of the lease database is said to risk two nodes",
        "supervisor/lease/replication.py",
        '    return Protection("asynchronous", True, s, message)\n',
        '    return Protection("asynchronous", False, s, message)\n',
        ("tests/test_replication_advisory.py::"
         "test_assess_names_the_protection_and_warns_only_where_two_nodes_can_run",),
    ),
    Mutant(
        "two_nodes_replication_not_warned",
        "the daemon warns at start when a failover of the lease database can cost two nodes",
        DAEMON,
        "        log.log(logging.WARNING if p.two_nodes else logging.INFO, "
        '"replication_protection",\n',
        '        log.log(logging.INFO, "replication_protection",\n',
        ("tests/test_replication_advisory.py::test_the_daemon_logs_the_protection_at_start",),
    ),
)


def by_name(name: str) -> Mutant:
    for m in MUTANTS:
        if m.name == name:
            return m
    raise KeyError(name)
