"""Prove that the defensive layer is pinned: each mutant below removes one defence from a copy of the project, and
the tests named with it must then fail. `python tools/mutants.py [INDEX ...]` (or `make mutants`); exit 1 if any
mutant survives. The layering rules have their own mutants, as test cases in tests/test_architecture.py.

A copy of the tree is made per mutant (under the system's temporary directory) so the checkout is never touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = ROOT / ".venv" / "bin" / "python"


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTANTS = (
    Mutant("a failed transaction is committed, not rolled back", "src/orchard/store/store.py",
           '                if self.conn.in_transaction:\n                    self.conn.execute("ROLLBACK")',
           '                if self.conn.in_transaction:\n                    self.conn.execute("COMMIT")',
           ("tests/test_journal.py",)),
    Mutant("a nested transaction joins the outer one instead of a savepoint", "src/orchard/store/store.py",
           "        if self.conn.in_transaction:\n            self._sync_after = self._sync_after or durable\n",
           "        if self.conn.in_transaction:\n            yield\n            return\n",
           ("tests/test_journal.py",)),
    Mutant("an observer's exception propagates", "src/orchard/core/transitions.py",
           "                    observer(event)\n                except Exception:",
           "                    observer(event)\n                except ZeroDivisionError:",
           ("tests/test_journal.py",)),
    Mutant("no internal-error guard around an attempt", "src/orchard/runtime/engine.py",
           "        except Exception as exc:  # a bug in one attempt",
           "        except ZeroDivisionError as exc:  # a bug in one attempt",
           ("tests/test_recovery.py::test_an_internal_error_ends_the_attempt_and_the_retry_goes_on",)),
    Mutant("merges a dead session made are not recognised", "src/orchard/runtime/recovery.py",
           "            if task.status is S.MERGING or (", "            if False and (",
           ("tests/test_recovery.py",)),
    Mutant("a journal rolled back past merges is believed, not git", "src/orchard/runtime/recovery.py",
           "task.status is S.MERGING or (task.status is not S.MERGED and task.task_id in found.unrecorded)",
           "task.status is S.MERGING",
           ("tests/test_recovery.py::test_a_journal_rolled_back_past_merges_learns_them_from_git_and_runs_none_"
            "again",)),
    Mutant("locks a killed git left in orchard's repository stay", "src/orchard/vcs/private.py",
           "    for path in lock_files(own.root):", "    for path in lock_files(own.root)[:0]:",
           ("tests/test_git_faults.py::test_locks_a_killed_session_left_in_orchards_repository_are_removed_on_"
            "resume",)),
    Mutant("a merge git could not make sends the agent round again", "src/orchard/core/scheduler.py",
           "        if ev.error:  # git failed", "        if False:  # git failed",
           ("tests/test_scheduler.py::test_a_merge_git_could_not_make_fails_the_task_without_a_retry_of_its_agent",)),
    Mutant("the plan snapshot's hash is not checked", "src/orchard/store/store.py",
           "        if digest is not None and (", "        if False and (",
           ("tests/test_hostile_agents.py::test_a_plan_an_agent_rewrote_in_the_journal_is_never_run",)),
    Mutant("an agent's secret env values are stored in state.db", "src/orchard/store/store.py",
           "        secrets = split_secrets(data, plan.redact)", "        secrets: dict[str, str] = {}",
           ("tests/test_security.py::test_secrets_in_an_agents_env_are_kept_out_of_the_store_and_still_reach_a_"
            "resumed_agent",)),
    Mutant("files an environment included stay in the history of an agent that committed them",
           "src/orchard/runtime/workspace.py",
           "    committed = paths_changed(host.git, live.start_commit, head, live.included)",
           "    committed: list[str] = []",
           ("tests/test_environment.py::test_ignored_files_reach_every_worktree_as_they_are_and_never_a_commit",)),
    Mutant("a reused worktree runs its setup every time", "src/orchard/runtime/workspace.py",
           "    if stamp.current:", "    if False:",
           ("tests/test_environment.py::test_a_reused_worktree_keeps_its_setup_and_runs_it_again_only_when_its_"
            "inputs_change",)),
    Mutant("a failed setup uses up the task's retries", "src/orchard/core/scheduler.py",
           "        if ev.setup_failed:  # the environment's fault", "        if False:  # the environment's fault",
           ("tests/test_environment.py::test_a_setup_that_fails_is_tried_once_more_then_fails_the_task_with_its_"
            "output",)),
    Mutant("a machine over its limits still starts attempts", "src/orchard/core/scheduler.py",
           "        if self._stopped or self.hold or waiting",
           "        if self._stopped or waiting",
           ("tests/test_limits.py::test_a_run_held_for_memory_starts_nothing_until_resume_lowers_the_limit",)),
    Mutant("a task's link is followed wherever it leads", "src/orchard/runtime/pool.py",
           "            if real.is_dir() and not real.is_symlink() and link.resolve() == real.resolve():\n"
           "                return real",
           "            return link.resolve()",
           ("tests/test_pool.py::test_a_task_link_pointed_elsewhere_is_dropped_never_followed",)),
    Mutant("a worktree that lost its link counts as parked", "src/orchard/runtime/pool.py",
           "return is_linked_worktree(self.repo, parked) and worktree_branch(parked) is None",
           "return is_linked_worktree(self.repo, parked)",
           ("tests/test_pool.py::test_a_task_link_pointed_elsewhere_is_dropped_never_followed",)),
    Mutant("a new run starts its agents without a preflight", "src/orchard/runtime/session.py",
           "            await run_preflight(ctx)\n", "            pass\n",
           ("tests/test_preflight.py::test_a_verify_that_cannot_run_on_the_base_stops_the_run_with_exit_3_before_any_"
            "agent",)),
    Mutant("a verify red on the base is blamed on the agent", "src/orchard/runtime/attempt.py",
           "        red_on_base=bool(task.verify) and ctx.journal.run().red_on_base(shlex.join(task.verify or ())),",
           "        red_on_base=False,",
           ("tests/test_preflight.py::test_a_verify_red_on_the_base_marks_the_failures_baseline_red_and_not_the_"
            "agents_fault",)),
    Mutant("a retry's verify runs with the PATH of the shell it came from", "src/orchard/runtime/context.py",
           "        return {**os.environ, **self.journal.run().recorded_environment()}",
           "        return dict(os.environ)",
           ("tests/test_recorded_environment.py::test_a_retry_from_another_shell_verifies_with_the_path_the_run_"
            "started_with",)),
    Mutant("setup is skipped though the pool removed what it made", "src/orchard/runtime/environment.py",
           "and all(os.path.lexists(self.worktree / p) for p in left)", "and True",
           ("tests/test_environment.py::test_a_reused_worktree_whose_setup_made_what_keep_does_not_keep_runs_setup_"
            "again",)),
    Mutant("a preflight a crash cut short is not run again", "src/orchard/runtime/preflight.py",
           "    if ctx.journal.count_events(PreflightChecked.type) < len(checks(ctx.plan)):\n        return True\n", "",
           ("tests/test_preflight.py::test_a_preflight_a_crash_cut_short_runs_again_on_resume_before_any_agent",)),
    Mutant("a resume does not tear down what a crashed session left", "src/orchard/runtime/session.py",
           "            await tear_down_left(ctx)\n", "",
           ("tests/test_environment.py::test_teardown_runs_after_a_first_ctrl_c_and_after_a_crash_in_the_resume",)),
    Mutant("a land killed half-way is not finished", "src/orchard/vcs/land.py",
           "    finished = land_interrupted(repo, marker) if marker is not None else None", "    finished = None",
           ("tests/test_vcs_merge.py::test_a_land_killed_half_way_is_finished_by_the_next",)),
    Mutant("orchard does not adopt unconfined agents' daemons", "src/orchard/runtime/unconfined.py",
           "        return int(libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0)) == 0", "        return False",
           ("tests/test_hostile_agents.py::test_an_unconfined_agents_escaped_daemon_is_adopted_and_killed",)),
    Mutant("what an unconfined agent planted in the user's .git stays", "src/orchard/runtime/unconfined.py",
           "if now.get(name) != self.baseline.get(name))", "if False)",
           ("tests/test_hostile_agents.py::test_an_unconfined_agent_that_plants_in_the_users_git_directory_is_caught_"
            "and_undone",)),
    Mutant("attempts a dead session left open stay open", "src/orchard/runtime/recovery.py",
           "        for attempt in journal.open_attempts():\n            journal.attempt_abandoned(attempt.id, "
           'detail="orchestrator stopped",',
           "        for attempt in journal.open_attempts()[:0]:\n            journal.attempt_abandoned(attempt.id, "
           'detail="orchestrator stopped",', ("tests/test_recovery.py",)),
    Mutant("git gets orchard's whole environment", "src/orchard/vcs/git.py",
           'if k in _PASSED_ENV or k.startswith("LC_")}', "}", ("tests/test_vcs_runner.py",)),
    Mutant("git runs the repository's hooks", "src/orchard/vcs/git.py", '    "-c", "core.hooksPath=/dev/null",\n', "",
           ("tests/test_hostile_agents.py::test_planted_hooks_config_and_attributes_never_run_and_the_users_"
            "repository_is_untouched",)),
    Mutant("an agent's planted config is not undone before its work is committed",
           "src/orchard/runtime/workspace.py",
           "            repaired = await asyncio.to_thread(host.own.restore)", "            repaired = []",
           ("tests/test_hostile_agents.py::test_planted_hooks_config_and_attributes_never_run_and_the_users_"
            "repository_is_untouched",)),
    Mutant("the sandbox leaves the file system writable", "src/orchard/runtime/sandbox.py",
           '"--unshare-pid", "--ro-bind", "/", "/",', '"--unshare-pid", "--bind", "/", "/",',
           ("tests/test_sandbox.py::test_a_sandboxed_agent_writes_its_worktree_and_nothing_else",)),
    Mutant("the sandbox shares orchard's PID namespace", "src/orchard/runtime/sandbox.py",
           '"--die-with-parent", "--unshare-pid", "--ro-bind"', '"--die-with-parent", "--ro-bind"',
           ("tests/test_sandbox.py::test_every_process_a_sandboxed_attempt_started_dies_with_it",)),
    Mutant("a kill takes any process with the run's id, whatever its repository", "src/orchard/runtime/recovery.py",
           'return env.get("ORCHARD_RUN_ID") == run_id and env.get("ORCHARD_WORKTREE", "").startswith(where)',
           'return env.get("ORCHARD_RUN_ID") == run_id',
           ("tests/test_cli_manage.py::test_cancel_after_the_orchestrator_died_stops_its_leftover_agents",)),
    Mutant("verify gets orchard's whole environment", "src/orchard/runtime/workspace.py",
           'base_env = agent_environment(host.environ, "", task.verify_env_pass)', "base_env = dict(os.environ)",
           ("tests/test_security.py::test_verify_gets_the_allowlisted_environment_and_only_the_secrets_the_plan_"
            "passes",)),
    Mutant("migration 2 leaves integration_tip empty", "src/orchard/store/schema.py",
           "    UPDATE runs SET integration_tip = base_commit;", "", ("tests/test_journal.py",)),
    Mutant("no backpressure from the merge queue", "src/orchard/core/scheduler.py",
           "if self._stopped or self.hold or waiting >= self.parallel + (gate.batch if gate else 0):",
           "if self._stopped or self.hold:",
           ("tests/test_engine_acceptance.py::test_backpressure_no_new_attempt_while_parallel_results_wait_to_merge",
            "tests/test_scheduler.py::test_no_new_attempt_while_parallel_results_wait_to_merge")),
    Mutant("plain progress lines print agent text as it came", "src/orchard/ui/lines.py",
           'self.write_line(safe_line(f"{stamp} {who}{message}"))', 'self.write_line(f"{stamp} {who}{message}")',
           ("tests/test_output_safety.py::test_plain_lines_show_escapes_and_ndjson_stays_exact",
            "tests/test_output_safety.py::test_a_run_whose_agent_prints_escapes_and_secrets")),
    Mutant("orchard logs prints escape sequences as they came", "src/orchard/cli/inspect_cmds.py",
           "out = data if self.raw else safe_text(self.decoder.decode(data, final)).encode()", "out = data",
           ("tests/test_output_safety.py::test_a_run_whose_agent_prints_escapes_and_secrets",)),
    Mutant("secrets are redacted by name only, not by format", "src/orchard/core/redact.py",
           "formats: Iterable[SecretFormat] = FORMATS)", "formats: Iterable[SecretFormat] = ())",
           ("tests/test_output_safety.py::test_a_run_whose_agent_prints_escapes_and_secrets",)),
    Mutant("a graceful stop never kills an agent its SIGTERM did not end", "src/orchard/runtime/context.py",
           "        self.stopping = True\n        self.stop.set()\n        for event in self.task_stops.values():\n"
           "            event.set()\n", "        self.stopping = True\n",
           ("tests/test_engine_signals.py::test_a_graceful_stop_kills_an_agent_that_ignores_its_sigterm_after_the_"
            "grace_period",)),
    Mutant("a failing candidate moves the integration branch", "src/orchard/runtime/gate.py",
           "tip = await asyncio.to_thread(_advance, self.ctx, candidate) if passed else None",
           "tip = await asyncio.to_thread(_advance, self.ctx, candidate)",
           ("tests/test_gate.py::test_16_good_results_and_a_culprit_finishing_together_take_at_most_9_checks",)),
    Mutant("a resume batches the candidate a kill cut short with everything waiting", "src/orchard/runtime/gate.py",
           "            again = tuple(t for t in self._first if t in self.train.waiting)",
           "            again: tuple[str, ...] = ()",
           ("tests/test_gate.py::test_a_kill_during_a_check_resumes_by_checking_the_same_candidate_and_merges_each_"
            "result_once",)),
    Mutant("a hard stop while a candidate is built fails its results as git errors", "src/orchard/runtime/gate.py",
           "            if isinstance(exc, GitTimeout) and ctx.processes.stopping:", "            if False:",
           ("tests/test_gate.py::test_a_second_signal_while_a_candidate_is_built_leaves_its_results_merging_for_the_"
            "resume",)),
    Mutant("recovery trusts a moved integration ref at a tree no check passed", "src/orchard/runtime/recovery.py",
           "    if checked is not None and actual not in checked:", "    if False:",
           ("tests/test_gate.py::test_a_resume_puts_back_an_integration_ref_moved_to_a_tree_no_check_passed",)),
    Mutant("the untested half of a failed candidate is dropped", "src/orchard/core/train.py",
           "            self._requeue(other)  # nothing is known of it", "            pass  # nothing is known of it",
           ("tests/test_train.py",)),
    Mutant("land takes a gated run's tip that no check passed", "src/orchard/cli/manage_cmds.py",
           "        if problem:\n            raise UngatedTip", "        if False:\n            raise UngatedTip",
           ("tests/test_gate.py::test_land_takes_a_tip_that_passed_the_gate_and_refuses_one_that_did_not",)),
    Mutant("a conflict resolution may drop the integration side's lines", "src/orchard/runtime/guardrails.py",
           "    return resolution_refused(markers, shown(lost)) if markers or lost else \"\"",
           "    return resolution_refused(markers, \"\") if markers else \"\"",
           ("tests/test_guardrails.py::test_a_resolver_sees_the_markers_and_both_sides_and_one_that_drops_the_other_"
            "sides_lines_is_refused",)),
    Mutant("lines other tasks merged are removed unnoticed", "src/orchard/runtime/guardrails.py",
           "        if common and is_ancestor(repo, commit, start):", "        if False:",
           ("tests/test_guardrails.py",)),
    Mutant("a merge commit's title keeps a secret", "src/orchard/runtime/merging.py",
           'title = title[:72] if ctx.redactor(title) == title else f"task {task_id}"', "title = title[:72]",
           ("tests/test_output_safety.py::test_merge_titles_never_carry_a_secret",)),
    Mutant("a cancelled task's processes are not stopped", "src/orchard/runtime/context.py",
           "        self.cancelled.add(task_id)\n        self.stop_for(task_id).set()",
           "        self.cancelled.add(task_id)",
           ("tests/test_steering.py::test_cancel_one_running_task_stops_its_group_blocks_dependents_and_the_rest_merges",)),
    Mutant("a transient failure is retried at once, without its backoff", "src/orchard/core/scheduler.py",
           "        if delay > 0:\n            self._streaks[ev.task_id] = streak",
           "        if False:\n            self._streaks[ev.task_id] = streak",
           ("tests/test_steering.py::test_crashes_back_off_doubling_and_a_permanent_failure_is_not_retried",)),
    Mutant("a permanent failure is retried like any other", "src/orchard/core/retrying.py",
           "    if kind is FailureClass.PERMANENT:\n        return outcome in task.retry_on",
           "    if kind is FailureClass.PERMANENT:\n        return True",
           ("tests/test_steering.py::test_crashes_back_off_doubling_and_a_permanent_failure_is_not_retried",)),
    Mutant("agent output is journaled, not only published", "src/orchard/core/transitions.py",
           "        self._publish([redacted(AgentOutput(",
           "        self.records.add_event(AgentOutput(run_id=self.run_id, ts=self._clock(), task=task_id, "
           "attempt=number, stream=stream, line=line), None)\n        self._publish([redacted(AgentOutput(",
           ("tests/test_steering.py::test_events_output_carries_every_stdout_and_stderr_line_in_order_redacted_and_bounded",)),
    Mutant("an agent's summary is stored and quoted unredacted", "src/orchard/core/transitions.py",
           "summary=capped_summary(self._redact(exited.summary))", "summary=capped_summary(exited.summary)",
           ("tests/test_context.py::test_a_command_agents_summary_file_reaches_its_dependents_prompts_unless_context_"
            "none",)),
    Mutant("a link an agent left in its outbox is followed", "src/orchard/runtime/outbox.py",
           "os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK", "os.O_RDONLY | os.O_NONBLOCK",
           ("tests/test_context.py::test_a_summary_file_that_is_a_link_is_not_followed",)),
    Mutant("tasks added by added tasks may go as deep as they like", "src/orchard/plan/extend.py",
           "    if count and parent is not None and depth + 1 > plan.max_add_depth:",
           "    if False:",
           ("tests/test_add.py::test_a_looping_agent_is_stopped_at_the_depth_and_count_limits",)),
    Mutant("a run may be flooded with added tasks", "src/orchard/plan/extend.py",
           "    if count and len(plan.added) + count > plan.max_added_tasks:",
           "    if False:",
           ("tests/test_add.py::test_a_looping_agent_is_stopped_at_the_depth_and_count_limits",)),
    Mutant("an added task may reuse an id of the run", "src/orchard/plan/extend.py",
           "        if d.id in plan:\n            problems.add(", "        if False:\n            problems.add(",
           ("tests/test_add.py::test_the_checks_of_an_addition",)),
    Mutant("a reload changes a merged task", "src/orchard/core/plan_diff.py",
           "    tasks = [snapshot.task(t.id) if t.id in merged else t for t in current.tasks]",
           "    tasks = list(current.tasks)",
           ("tests/test_reload.py::test_changes_are_named_by_kind_and_merged_tasks_never_change",)),
    Mutant("a task's time grows with the clock while its dead session stands still", "src/orchard/cli/inspect_cmds.py",
           "    return last_seen(store, run_id) or time.time()", "    return time.time()",
           ("tests/test_resume_figures.py",)),
    Mutant("the web dashboard serves without its token", "src/orchard/web/app.py",
           "        if not given or not hmac.compare_digest(given, token):", "        if False:",
           ("tests/test_web.py::test_off_loopback_every_route_demands_the_token",)),
    Mutant("a web action is taken without the page's CSRF token", "src/orchard/web/actions.py",
           '    if not hmac.compare_digest(request.headers.get(CSRF_HEADER, ""), site.csrf):', "    if False:",
           ("tests/test_web.py::test_actions_need_the_flag_the_pages_csrf_token_and_the_same_origin",)),
    Mutant("an HTML report puts an agent's text in as markup", "src/orchard/ui/html_report.py",
           "    return html.escape(safe_text(str(text)), quote=True)", "    return str(text)",
           ("tests/test_report.py::test_a_run_writes_its_report_and_report_shows_it_three_ways",)),
    Mutant("a notification is sent unredacted", "src/orchard/runtime/notify.py",
           "    return {key: redact(value) if isinstance(value, str) else value for key, value in data.items()}",
           "    return dict(data)",
           ("tests/test_notify.py::test_the_notifier_redacts_what_it_sends_and_tells_attention_notes",)),
    Mutant("a webhook's token is kept in the plan's snapshot", "src/orchard/core/serialize.py",
           '        return hidden_url(value, f"notify[{path[1] + 1}].webhook")', "        return value",
           ("tests/test_notify.py::test_the_snapshot_keeps_notify_and_hides_the_webhook_token",)),
    Mutant("the session's end waits for a hanging receiver without bound", "src/orchard/runtime/notify.py",
           "                await asyncio.wait(joins, timeout=waited)", "                await asyncio.wait(joins)",
           ("tests/test_notify.py::test_a_receiver_that_never_answers_delays_the_end_by_at_most_its_timeout",)),
    Mutant("a Ctrl-C does not reach the agents on a cluster's nodes", "src/orchard/cluster/executor.py",
           "        await self.processes.stop_for(task_id).wait()\n", "        await asyncio.Event().wait()\n",
           ("tests/test_ray.py::test_ctrl_c_stops_the_remote_agents_and_the_run_resumes_on_the_cluster[1]",)),
    Mutant("a task whose machine is lost runs again for ever", "src/orchard/core/scheduler.py",
           "            if st.lost > MAX_LOST:", "            if False:",
           ("tests/test_scheduler.py::test_a_lost_machine_runs_the_attempt_again_using_no_retry_until_a_bound",)),
    Mutant("a webhook's redirect is followed", "src/orchard/runtime/notify.py",
           "_OPENER = urllib.request.build_opener(_NoRedirects)", "_OPENER = urllib.request.build_opener()",
           ("tests/test_notify.py::test_redirects_are_not_followed",)),
    Mutant("word of another attempt is believed", "src/orchard/cluster/executor.py",
           "                if token != job.token:", "                if False:",
           ("tests/test_cluster_node.py::test_word_of_another_attempt_loses_the_node_and_its_result_is_not_taken",)),
    Mutant("the watchdog waits for a silent node for ever", "src/orchard/cluster/executor.py",
           "            return await asyncio.wait_for(receive(), self.watchdog_s)",
           "            return await receive()",
           ("tests/test_cluster_node.py::test_a_node_that_falls_silent_is_lost_to_the_watchdog",)),
    Mutant("the keeper spares a group the driver no longer wants", "src/orchard/cluster/keeper.py",
           "        if lapsed or (task not in open_tasks and leased_at > started_at):", "        if lapsed:",
           ("tests/test_cluster_node.py::test_the_keeper_kills_a_group_the_driver_no_longer_lists",)),
    Mutant("the keeper takes no notice of its host actor's death", "src/orchard/cluster/keeper.py",
           "    lapsed = not owner_alive or now - leased_at > term_s", "    lapsed = now - leased_at > term_s",
           ("tests/test_cluster_node.py::test_the_keeper_kills_everything_once_its_owner_is_gone",)),
    Mutant("a new host leaves what a killed driver's host left", "src/orchard/cluster/keeper.py",
           "        sweep(root, term_s=0.0, owner_alive=False)\n", "",
           ("tests/test_cluster_node.py::test_a_new_host_reaps_what_a_dead_hosts_directory_left",)),
    Mutant("a renewal Ray delivers late kills an attempt sent after it", "src/orchard/cluster/node.py",
           "if attempt.token in tokens or attempt.round_ > round_)", "if attempt.token in tokens)",
           ("tests/test_cluster_node.py::test_a_renewal_keeps_what_it_names_and_what_was_sent_after_it",)),
    Mutant("a node has no keeper", "src/orchard/cluster/node.py",
           "        start_keeper(self.root, term_s=lease_s)\n", "",
           ("tests/test_ray.py::test_a_node_removed_mid_attempt_is_lost_its_agents_killed_and_the_task_runs_again_"
            "on_the_other",)),
)


def survives(mutant: Mutant, scratch: Path) -> bool:
    """Apply `mutant` to a copy of the project and run its tests; True if they all still pass."""
    tree = scratch / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    skipped = shutil.ignore_patterns(".venv", ".tools", ".git", "__pycache__", ".*_cache", "results")
    shutil.copytree(ROOT, tree, ignore=skipped)
    target = tree / mutant.path
    text = target.read_text()
    if text.count(mutant.old) != 1:
        raise SystemExit(f"mutant {mutant.name!r}: the code it changes is no longer in {mutant.path}; update it")
    target.write_text(text.replace(mutant.old, mutant.new))
    env = {**os.environ, "PYTHONPATH": f"{tree / 'src'}{os.pathsep}{tree}"}  # child `python -m orchard` too
    proc = subprocess.run([str(PYTHON), "-m", "pytest", "-q", "-p", "no:cacheprovider", *mutant.tests], cwd=tree,
                          env=env, capture_output=True, text=True, timeout=900, check=False)
    failed = [line for line in proc.stdout.splitlines() if line.startswith("FAILED")]
    print(f"{'SURVIVED' if proc.returncode == 0 else 'caught  '} {mutant.name}"
          + "".join(f"\n           {line}" for line in failed), flush=True)
    return proc.returncode == 0


def main(argv: list[str]) -> int:
    chosen = [MUTANTS[int(i)] for i in argv] if argv else list(MUTANTS)
    with tempfile.TemporaryDirectory(prefix="orchard-mutants-") as scratch:
        survivors = [m.name for m in chosen if survives(m, Path(scratch))]
    print(f"{len(chosen) - len(survivors)} of {len(chosen)} mutants caught")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
