"""What a worker will run: its own config, whatever a payload says.

A workflow's input and its `update_spec` update arrive through Temporal, where anyone who can
write to the namespace can put anything. What executes, connects or reads a secret (a replica's
`command` and `env`, the backend, the Compose project, `state_dir`, the queue's URLs and
credential variables, the model server, the decision log) therefore comes from the worker's own
docktor.yaml. The activities look each service up here and act on the worker's plan; a payload
that asks for anything else (another service, another project, a plan that differs in any field,
another log file) is refused, and nothing runs.

The worker reads its file again when it changes on disk, so an operator's edit followed by
`python -m starter` (which hands the loops the new plan) is taken without a worker restart; a
file that no longer loads leaves the last good one in force and says so once.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from docktor import names
from docktor.plan import LLMPlan, ServicePlan
from docktor.spec import ConfigError, DocktorConfig, load_config
from docktor.text import printable_line

log = logging.getLogger("docktor.authority")

# Fields named in a refusal; the rest are counted. A refusal is one short line of a reason.
NAMED_FIELDS = 4

RESTART_HINT = "restart the loop from this worker's config (python -m starter)"
# A name from a payload, as a refusal quotes it.
QUOTED_MAX_CHARS = 64


class Refused(Exception):
    """The payload asks for something the worker's config does not say; nothing was run."""


@dataclass(frozen=True)
class Allowed:
    """One service as the worker's config has it: what its activities act on."""

    project: str
    plan: ServicePlan
    llm: LLMPlan
    journal_path: str


class WorkerConfig:
    """The worker's own config, the only source of what its activities run."""

    def __init__(self, config: DocktorConfig | None, path: str | Path | None = None) -> None:
        # None: a worker with no config (a test's scripted activities); it runs nothing.
        self._config = config
        self._path = Path(path) if path is not None else None
        self._seen = self._stamp()
        self._allowed = _allowed_of(config)
        self._broken: str | None = None

    @classmethod
    def from_file(cls, path: str | Path) -> WorkerConfig:
        """The config at `path` (ConfigError when it does not load), re-read when it changes."""
        return cls(load_config(path), path)

    @property
    def config(self) -> DocktorConfig | None:
        self._reload_if_changed()
        return self._config

    def allowed(self, project: str, service: str) -> Allowed:
        """The service as the worker's config has it; Refused when the config has no such
        service in that project."""
        self._reload_if_changed()
        found = self._allowed.get((project, service))
        if found is not None:
            return found
        name = printable_line(service, QUOTED_MAX_CHARS)
        if self._config is None:
            raise Refused(f"refused: this worker has no config; nothing run for {name!r}")
        ours = names.project_name(self._config.project)
        if project != ours:
            theirs = printable_line(project, QUOTED_MAX_CHARS)
            raise Refused(
                f"refused: this worker serves project {ours!r}, not {theirs!r}; nothing run"
            )
        raise Refused(f"refused: service {name!r} is not in this worker's config; nothing run")

    def check_plan(self, project: str, plan: ServicePlan) -> Allowed:
        """The worker's entry for the plan's service, if the plan is exactly the worker's."""
        allowed = self.allowed(project, plan.name)
        _refuse_differences("plan", plan.model_dump(mode="json"), allowed.plan, allowed)
        return allowed

    def check_llm(self, allowed: Allowed, llm: LLMPlan) -> LLMPlan:
        """The worker's model block, if the payload's is exactly it."""
        _refuse_differences("llm", llm.model_dump(mode="json"), allowed.llm, allowed)
        return allowed.llm

    def journal_path(self, path: str) -> str:
        """The decision log, if `path` is the worker's own."""
        self._reload_if_changed()
        ours = {a.journal_path for a in self._allowed.values()}
        if path not in ours:
            shown = printable_line(path, QUOTED_MAX_CHARS)
            raise Refused(f"refused: {shown!r} is not this worker's decision log; not written")
        return path

    # ---- reading the file again ------------------------------------------------------------

    def _stamp(self) -> tuple[int, int, int] | None:
        if self._path is None:
            return None
        try:
            stat = os.stat(self._path)
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size, stat.st_ino

    def _reload_if_changed(self) -> None:
        stamp = self._stamp()
        if self._path is None or stamp is None or stamp == self._seen:
            return
        self._seen = stamp
        try:
            config = load_config(self._path)
        except ConfigError as exc:
            problem = "; ".join(exc.problems)
            if problem != self._broken:
                log.warning(
                    "%s changed but does not load (%s); keeping the config read before",
                    self._path,
                    problem,
                )
            self._broken = problem
            return
        self._broken = None
        self._config = config
        self._allowed = _allowed_of(config)
        log.info("%s changed; read again: services %s", self._path, config.service_names())


def _allowed_of(config: DocktorConfig | None) -> dict[tuple[str, str], Allowed]:
    if config is None:
        return {}
    project = names.project_name(config.project)
    llm = LLMPlan.from_spec(config.llm)
    journal = config.journal_path
    return {
        (project, spec.name): Allowed(project, ServicePlan.from_spec(spec), llm, journal)
        for spec in config.services
    }


def _refuse_differences(what: str, sent: dict[str, Any], ours: Any, allowed: Allowed) -> None:
    differing = _differing(sent, ours.model_dump(mode="json"))
    if not differing:
        return
    named = ", ".join(f"{what}.{field}" for field in differing[:NAMED_FIELDS])
    more = len(differing) - NAMED_FIELDS
    if more > 0:
        named += f" and {more} more"
    verb = "differs" if len(differing) == 1 else "differ"
    raise Refused(
        f"refused: the loop's {named} {verb} from this worker's config; nothing run "
        f"({RESTART_HINT})"
    )


def _differing(sent: dict[str, Any], ours: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted names of the fields whose values differ, one level into nested blocks."""
    found: list[str] = []
    for key in sorted(set(sent) | set(ours)):
        mine, theirs = ours.get(key), sent.get(key)
        if mine == theirs:
            continue
        if key not in sent and mine in (None, [], {}):
            # A field a payload of an older release did not have, unset here: the same plan.
            # (The plan's own fields are filled in as it decodes; a queue block's kind fields
            # are not, as the workflow knows no kinds.)
            continue
        if not prefix and isinstance(mine, dict) and isinstance(theirs, dict):
            found.extend(_differing(theirs, mine, f"{key}."))
        else:
            found.append(f"{prefix}{key}")
    return found
