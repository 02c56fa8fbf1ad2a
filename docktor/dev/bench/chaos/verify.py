"""The checks made once a chaos run is over, on what Temporal committed: every loop's decisions
read back from its history, held against the decision log, the faults and the samples.

A loop's decisions are all in its history: each run begins with the state the previous one
carried into continue-as-new (its last DECISION_RING decisions, more than a run of at most 25
iterations makes), and the last run answers the `decisions` query from its own replayed
history. So the union over the chain of runs is every decision the loop committed."""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryRequest
from temporalio.client import Client

from docktor import names
from docktor.dev.bench.chaos.faults import FaultRecord
from docktor.dev.bench.chaos.plan import ChaosOptions, Controlled, Load
from docktor.dev.bench.chaos.watch import Sample, Violation
from docktor.journal import decision_key
from docktor.loop.messages import AutoscalerInput
from docktor.values import Decision

# A decision timestamp this close to a fault's window counts as "during" it, for the hints
# (workflow time and the harness's clock differ by the moments a task takes to start).
NEAR = 2.0
# Fields of a log line that must be the committed decision's (run_id: the line of a retried
# task is written by the same run; it is compared too).
COMPARED = (
    "timestamp",
    "action",
    "current_replicas",
    "target_replicas",
    "reason",
    "observations",
    "run_id",
)


@dataclass
class History:
    decisions: dict[str, list[Decision]]  # by service
    notes: list[str] = field(default_factory=list)

    def count(self) -> int:
        return sum(len(d) for d in self.decisions.values())


async def read_history(client: Client, workflow_ids: dict[str, str]) -> History:
    """Every committed decision of each loop (service -> workflow id), in sequence order."""
    history = History({})
    for service, workflow_id in workflow_ids.items():
        decisions, note = await _loop_decisions(client, workflow_id)
        history.decisions[service] = decisions
        if note:
            history.notes.append(f"{service}: {note}")
    return history


async def _loop_decisions(client: Client, workflow_id: str) -> tuple[list[Decision], str]:
    handle = client.get_workflow_handle(workflow_id)
    run_id: str | None = (await handle.describe()).run_id
    found: dict[str, Decision] = {}
    last = client.get_workflow_handle(workflow_id, run_id=run_id)
    for decision in await last.query(names.DECISIONS, 1000, result_type=list[Decision]):
        found[decision_key(decision)] = decision
    runs = 0
    while run_id:
        runs += 1
        response = await client.workflow_service.get_workflow_execution_history(
            GetWorkflowExecutionHistoryRequest(
                namespace=client.namespace,
                execution=WorkflowExecution(workflow_id=workflow_id, run_id=run_id),
                maximum_page_size=1,
            )
        )
        started = response.history.events[0].workflow_execution_started_event_attributes
        (request,) = await client.data_converter.decode(started.input.payloads, [AutoscalerInput])
        for decision in request.state.decisions:
            found.setdefault(decision_key(decision), decision)
        run_id = started.continued_execution_run_id or None
    decisions = sorted(found.values(), key=lambda d: d.sequence)
    sequences = [d.sequence for d in decisions]
    note = ""
    if sequences != list(range(1, len(sequences) + 1)):
        missing = sorted(set(range(1, max(sequences, default=0) + 1)) - set(sequences))
        note = f"{runs} runs; sequences missing from the carried states: {missing[:20]}"
    return decisions, note


# ---- the decision log against history ---------------------------------------------------------


@dataclass
class JournalCheck:
    violations: list[Violation] = field(default_factory=list)
    lines: int = 0
    matched: int = 0
    # Counts by kind of mismatch (missing, duplicated, differs, extra, out_of_order).
    mismatches: dict[str, int] = field(default_factory=dict)


def check_journal(
    history: History, lines: list[Decision], faults: list[FaultRecord]
) -> JournalCheck:
    """Every committed decision in the log exactly once, as committed, in sequence order; and
    nothing in the log that history does not hold."""
    check = JournalCheck(lines=len(lines))
    by_key: dict[str, list[tuple[int, Decision]]] = {}
    for index, line in enumerate(lines):
        by_key.setdefault(decision_key(line), []).append((index, line))
    committed: set[str] = set()

    def add(kind: str, decision: Decision, detail: str) -> None:
        check.mismatches[kind] = check.mismatches.get(kind, 0) + 1
        when = decision.timestamp.timestamp()
        during = faults_near(faults, when)
        hint = f" (during {', '.join(during)})" if during else ""
        check.violations.append(Violation(f"journal_{kind}", when, decision.service, detail + hint))

    for decisions in history.decisions.values():
        order: list[tuple[int, int]] = []  # (place in the file, sequence)
        for decision in decisions:
            key = decision_key(decision)
            committed.add(key)
            got = by_key.get(key, [])
            name = f"sequence {decision.sequence} ({_short(decision)})"
            if not got:
                add("missing", decision, f"{name} is in history, not in the log")
                continue
            if len(got) > 1:
                add("duplicated", decision, f"{name} is in the log {len(got)} times")
            index, line = got[0]
            order.append((index, decision.sequence))
            differs = _differences(decision, line)
            if differs:
                add(
                    "differs",
                    decision,
                    f"{name}: the log has {_short(line)} at "
                    f"{line.timestamp:%H:%M:%S.%f}; differing: {', '.join(differs)}",
                )
            else:
                check.matched += 1
        order.sort()
        sequences = [sequence for _, sequence in order]
        for before, after in zip(sequences, sequences[1:], strict=False):
            if after < before:
                decision = next(d for d in decisions if d.sequence == after)
                add("out_of_order", decision, f"sequence {after} written after {before}")
    for key, got in by_key.items():
        if key not in committed:
            line = got[0][1]
            add("extra", line, f"the log has {_short(line)} (key {key}) that history has not")
    return check


def _short(decision: Decision) -> str:
    return (
        f"{decision.action} {decision.current_replicas} -> {decision.target_replicas} "
        f"at {decision.timestamp:%H:%M:%S}"
    )


def _differences(committed: Decision, line: Decision) -> list[str]:
    mine, theirs = committed.model_dump(mode="json"), line.model_dump(mode="json")
    return [name for name in COMPARED if mine.get(name) != theirs.get(name)]


def faults_near(faults: Iterable[FaultRecord], when: float, margin: float = NEAR) -> list[str]:
    return sorted(
        {f.kind for f in faults if f.started - margin <= when <= (f.ended or f.started) + margin}
    )


# ---- loops that stop deciding -----------------------------------------------------------------


@dataclass
class Liveness:
    violations: list[Violation] = field(default_factory=list)
    # By fault kind: the longest a loop went without a decision across such a fault, and the
    # longest from the part being back to a loop's next decision.
    longest_silence: dict[str, float] = field(default_factory=dict)
    first_after_restore: dict[str, float] = field(default_factory=dict)


def check_liveness(
    history: History,
    faults: list[FaultRecord],
    intervals: dict[str, float],
    options: ChaosOptions,
    run_until: float,
) -> Liveness:
    """Each loop decides again within `stuck_after` of every fault's end, and is never silent
    for longer than its interval plus `stuck_after` plus the faults in between."""
    result = Liveness()
    for service, decisions in history.decisions.items():
        times = [d.timestamp.timestamp() for d in decisions if d.action != "stopped"]
        if not times:
            continue
        for fault in faults:
            end = fault.ended or fault.started
            if end + options.stuck_after > run_until:
                continue  # the run ended before the bound: not judged
            after = bisect.bisect_right(times, end)
            first = times[after] - end if after < len(times) else run_until - end
            _keep_max(result.first_after_restore, fault.kind, first)
            start = bisect.bisect_left(times, fault.started)
            if start > 0 and after < len(times):
                _keep_max(result.longest_silence, fault.kind, times[after] - times[start - 1])
            if first > options.stuck_after:
                result.violations.append(
                    Violation(
                        "loop_decides_after_fault",
                        end,
                        service,
                        f"no decision for {first:.1f}s after the {fault.kind} ended "
                        f"(bound {options.stuck_after:g}s)",
                    )
                )
        for before, after_t in zip(times, times[1:], strict=False):
            down = sum(
                max(0.0, min(f.ended, after_t) - max(f.started, before))
                for f in faults
                if f.ended > before and f.started < after_t
            )
            allowed = intervals[service] + options.stuck_after + down
            if after_t - before > allowed:
                result.violations.append(
                    Violation(
                        "loop_alive",
                        before,
                        service,
                        f"silent {after_t - before:.1f}s (allowed {allowed:.1f}s with "
                        f"{down:.1f}s of faults in between)",
                    )
                )
    return result


def _keep_max(table: dict[str, float], kind: str, value: float) -> None:
    table[kind] = round(max(table.get(kind, 0.0), value), 2)


# ---- scale-downs on missing data ----------------------------------------------------------------


def check_missing_data(history: History, controlled: list[Controlled]) -> list[Violation]:
    """No scale-down without the queue's backlog: missing data never takes replicas away."""
    queues = {c.name for c in controlled}
    found = []
    for service, decisions in history.decisions.items():
        for d in decisions:
            if d.action != "scale_down":
                continue
            blind = "no metrics could be observed" in d.reason
            if service in queues and "queue.backlog" not in d.observations:
                blind = True
            if blind:
                found.append(
                    Violation(
                        "no_scale_down_on_missing_data",
                        d.timestamp.timestamp(),
                        service,
                        f"sequence {d.sequence}: {_short(d)} with observations "
                        f"{sorted(d.observations)}: {d.reason[:200]}",
                    )
                )
    return found


# ---- controlled services back to what their load needs ------------------------------------------


@dataclass
class Settling:
    violations: list[Violation] = field(default_factory=list)
    # By fault kind, the longest from the part back to the service serving its load again.
    seconds: dict[str, float] = field(default_factory=dict)


def backlog_ok(load: Load) -> float:
    """A backlog a served load leaves: a couple of seconds of the baseline, at least 100."""
    return max(100.0, 3 * load.rate)


def settled(
    sample: Sample, service: Controlled, load: Load, load_began: float, options: ChaosOptions
) -> bool:
    """Serving its load with the count it needs: the backlog drained (so not too few) and no
    more replicas than the load of the scale-down window needs, plus one (not too many). Only
    between bursts: during one the count is still climbing by design."""
    queue = sample.queues.get(service.name)
    if queue is None or queue.backlog is None:
        return False
    elapsed = sample.at - load_began
    if load.rate_at(elapsed) != load.rate:
        return False
    window = service.down_window + 3 * service.check_interval
    step = 1.0
    need = 0
    t = elapsed - window
    while t <= elapsed:
        need = max(need, service.need(load.rate_at(t)))
        t += step
    replicas = sample.replicas.get(service.name, 0)
    return queue.backlog <= backlog_ok(load) and service.min_replicas <= replicas <= need + 1


def check_settling(
    samples: list[Sample],
    faults: list[FaultRecord],
    controlled: list[Controlled],
    load_began: dict[str, float],
    options: ChaosOptions,
) -> Settling:
    result = Settling()
    bound = options.settle_bound()
    if not samples:
        return result
    last = samples[-1].at
    for fault in faults:
        end = fault.ended or fault.started
        deadline = _deadline(fault, faults, bound)
        if deadline > last:
            continue
        for service in controlled:
            began = load_began[service.name]
            first = next(
                (
                    s.at
                    for s in samples
                    if end <= s.at <= deadline and settled(s, service, options.load, began, options)
                ),
                None,
            )
            if first is None:
                result.violations.append(
                    Violation(
                        "back_to_needed_count",
                        end,
                        service.name,
                        f"not serving its load with the count it needs within "
                        f"{deadline - end:.0f}s of the {fault.kind} ending "
                        f"({_situation(samples, service, end, deadline)})",
                    )
                )
            else:
                _keep_max(result.seconds, fault.kind, first - end)
    return result


def _deadline(fault: FaultRecord, faults: list[FaultRecord], bound: float) -> float:
    """`bound` after the fault's end, plus the time other parts were down in that span (a
    service cannot be back while its queue or every worker is away)."""
    end = fault.ended or fault.started
    deadline = end + bound
    for _ in range(10):
        down = sum(
            max(0.0, min(other.ended, deadline) - max(other.started, end))
            for other in faults
            if other is not fault and other.ended > end and other.started < deadline
        )
        if end + bound + down <= deadline + 0.01:
            break
        deadline = end + bound + down
    return deadline


def _situation(samples: list[Sample], service: Controlled, start: float, end: float) -> str:
    seen = [s for s in samples if start <= s.at <= end]
    counts = [s.replicas.get(service.name, 0) for s in seen]
    backlogs = [q.backlog for s in seen if (q := s.queues.get(service.name)) and q.backlog]
    return (
        f"replicas {min(counts, default=0)}..{max(counts, default=0)}, "
        f"backlog up to {max(backlogs, default=0)}"
    )


def when(at: float) -> str:
    return datetime.fromtimestamp(at).astimezone().strftime("%H:%M:%S")
