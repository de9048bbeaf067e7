"""The attempts of an alignment run as the Prefect server sees them.

Running a run again under its name resumes it (flows/alignment.py) in a new flow run, an
attempt. An attempt killed with SIGKILL never reports its end, so the server shows it Running
for ever. Two remedies:
- each attempt tags its flow run with the run (`run:<name>`, also a filter in the UI) and its
  process; a resuming attempt sets the earlier attempts whose process on this host is gone
  (their round subflows and tasks with them) to Crashed, and the subflows and tasks left
  Running under an earlier attempt that has already ended (a served deployment's runner
  reports its killed flow run Crashed, but not the round subflow inside it);
- for an attempt killed without a resume, Prefect's own zombie detection: flow runs send
  heartbeats (`PREFECT_FLOWS_HEARTBEAT_FREQUENCY`), and the automation `online-cut serve`
  creates marks a flow run Crashed when they stop.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta

from prefect import get_client
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterParentFlowRunId,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
    TaskRunFilter,
    TaskRunFilterState,
    TaskRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.context import FlowRunContext
from prefect.settings import get_current_settings
from prefect.states import Crashed

RUN_TAG = "run:"  # + the alignment run's name
PROCESS_TAG = "process:"  # + "<host>:<pid>" of the process running the attempt
UNFINISHED = [StateType.RUNNING, StateType.PENDING, StateType.PAUSED]  # paused: a round waiting for people
ZOMBIE_AUTOMATION = "online-cut: crash flow runs without heartbeats"


def begin_attempt(run: str) -> tuple[FlowRun, list[FlowRun]]:
    """Tag this flow run as an attempt of `run` with its process, set the earlier attempts whose
    process is gone to Crashed; returns this attempt and every attempt of the run, oldest first."""
    this = FlowRunContext.get().flow_run
    process = f"{PROCESS_TAG}{socket.gethostname()}:{os.getpid()}"
    tags = [t for t in this.tags if not t.startswith((RUN_TAG, PROCESS_TAG))] + [f"{RUN_TAG}{run}", process]
    with get_client(sync_client=True) as client:
        client.update_flow_run(this.id, tags=tags)
        earlier = [a for a in _attempts(client, run) if a.id != this.id]
        for attempt in earlier:
            message = (f"Crashed: its process ({_process(attempt)}) was gone when flow run '{this.name}' resumed "
                       f"run '{run}'")
            if attempt.state_type in UNFINISHED and _process_gone(attempt):
                _crash(client, attempt, message)
            elif attempt.state_type not in UNFINISHED:  # ended: nothing under it runs any more
                _crash(client, attempt, message, attempt_too=False)
        return this, _attempts(client, run)


def _attempts(client: SyncPrefectClient, run: str) -> list[FlowRun]:
    flow_runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"{RUN_TAG}{run}"])))
    return sorted(flow_runs, key=lambda r: r.created)


def _crash(client: SyncPrefectClient, attempt: FlowRun, message: str, attempt_too: bool = True) -> None:
    """Set the attempt (unless not `attempt_too`), its unfinished round subflows and its unfinished task
    runs to Crashed."""
    subflows = client.read_flow_runs(flow_run_filter=FlowRunFilter(
        parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[attempt.id]),
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=UNFINISHED))))
    flow_run_ids = [attempt.id, *(subflow.id for subflow in subflows)]
    task_runs = client.read_task_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=flow_run_ids)),
        task_run_filter=TaskRunFilter(state=TaskRunFilterState(type=TaskRunFilterStateType(any_=UNFINISHED), name=None)))
    for task_run in task_runs:
        client.set_task_run_state(task_run.id, Crashed(message=message), force=True)
    to_crash = flow_run_ids if attempt_too else flow_run_ids[1:]
    for flow_run_id in reversed(to_crash):  # subflows first, as a crash would end them
        client.set_flow_run_state(flow_run_id, Crashed(message=message), force=True)


def _process(flow_run: FlowRun) -> str | None:
    return next((t.removeprefix(PROCESS_TAG) for t in flow_run.tags if t.startswith(PROCESS_TAG)), None)


def _process_gone(flow_run: FlowRun) -> bool:
    """Whether the flow run's recorded process is known to be gone: it ran on this host and no
    process has its id. Unrecorded or elsewhere: left to the zombie automation."""
    host, _, pid = (_process(flow_run) or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def ensure_zombie_automation() -> None:
    """Create the automation that marks a flow run Crashed when its heartbeats stop for three
    heartbeat periods (docs.prefect.io, "How to detect and respond to zombie flows"); one that
    exists already is kept, or replaced if it waits for another heartbeat period than this one's."""
    from prefect.automations import Automation
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    heartbeat_s = get_current_settings().flows.heartbeat_frequency
    try:
        existing = Automation.read(name=ZOMBIE_AUTOMATION)
    except ValueError:  # not found
        existing = None
    if existing is not None:
        if heartbeat_s is not None and existing.trigger.within == timedelta(seconds=3 * heartbeat_s):
            return
        existing.delete()
    if heartbeat_s is None:  # heartbeats off: nothing to detect a zombie by
        return
    Automation(
        name=ZOMBIE_AUTOMATION,
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Failed",
                    "prefect.flow-run.Cancelled", "prefect.flow-run.Crashed"},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=3 * heartbeat_s),
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED,
                                    message=f"Crashed: no heartbeat for {3 * heartbeat_s} s (its process is gone)")],
    ).create()
