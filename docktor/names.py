"""Names that the workflow, its clients and the dev stack share, spelled once.

A running loop is found and steered by these strings; renaming one breaks every loop that is
running (and every client of an older release), so they change only with a migration.
"""

from __future__ import annotations

WORKFLOW = "ServiceAutoscaler"
TASK_QUEUE = "docktor"

# A loop's workflow id: "docktor:<project>:<service>". Neither a project name nor a service name
# may hold a ':' (docktor/spec/primitives.py), so two loops never share an id.
WORKFLOW_ID_SEPARATOR = ":"

# The project of a config that names none: part of every loop's id, so it never changes.
DEFAULT_PROJECT = "default"


def project_name(project: str | None) -> str:
    """The project a loop runs under: the config's, or DEFAULT_PROJECT."""
    return project or DEFAULT_PROJECT


def workflow_id(project: str | None, service: str) -> str:
    return WORKFLOW_ID_SEPARATOR.join(("docktor", str(project), service))


def legacy_workflow_id(project: str | None, service: str) -> str:
    """The id of releases before WORKFLOW_ID_SEPARATOR: ambiguous, since both names may hold a
    '-' (project `a-b`, service `c` and project `a`, service `b-c`). A loop found under it is
    used only when its search attributes or its input name the same project and service."""
    return f"docktor-{project}-{service}"


# Activities
OBSERVE = "observe"
EVALUATE = "evaluate"
ADVISE = "advise"
APPLY = "apply"
RECORD = "record"
# observe, evaluate and a hold's line in one local activity: what an idle iteration costs.
OBSERVE_EVALUATE = "observe_evaluate"

# Queries, signals and updates of the workflow
STATUS = "status"
DECISIONS = "decisions"
# The whole LoopState (policy memory, last sample, last scale times), read-only: a dry run
# (`docktor mcp`'s what_if) decides from exactly what the loop's next iteration will see.
LOOP_STATE = "loop_state"
FORECAST = "forecast"
NUDGE = "nudge"
PAUSE = "pause"
RESUME = "resume"
SCALE_TO = "scale_to"
APPROVE = "approve"
REJECT = "reject"
UPDATE_SPEC = "update_spec"

# Search attributes -> their type, as `temporal operator search-attribute create` spells it.
PROJECT_ATTRIBUTE = "DocktorProject"
SERVICE_ATTRIBUTE = "DocktorService"
REPLICAS_ATTRIBUTE = "DocktorReplicas"
LAST_ACTION_ATTRIBUTE = "DocktorLastAction"
PAUSED_ATTRIBUTE = "DocktorPaused"
SEARCH_ATTRIBUTES = {
    PROJECT_ATTRIBUTE: "Keyword",
    SERVICE_ATTRIBUTE: "Keyword",
    REPLICAS_ATTRIBUTE: "Int",
    LAST_ACTION_ATTRIBUTE: "Keyword",
    PAUSED_ATTRIBUTE: "Bool",
}
