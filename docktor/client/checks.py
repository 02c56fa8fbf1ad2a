"""The online half of `docktor config validate`: does what the file names exist and answer?

Each check gives one line, OK or the problem, so a user sees everything that is wrong in one
run instead of fixing one thing at a time. Every check has a deadline: a server that does not
answer is a FAIL line, never a hung command.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

from docktor import names
from docktor.advisor import check_llm
from docktor.backends import one_backend
from docktor.client.temporal import TemporalUnreachable, connect, resolve
from docktor.plan import LLMPlan, ServicePlan
from docktor.sources import MetricSource, source_class
from docktor.sources.sampling import source_kinds
from docktor.spec import ConfigError, DocktorConfig
from docktor.text import redact, source_error

# Longer than any one client's own connect timeout (NATS 2 s, Docker, the LLM's timeout_s
# unless set above this), so their clearer messages win over a bare "no answer".
CHECK_TIMEOUT_S = 20.0

T = TypeVar("T")


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    subject: str
    detail: str = ""

    def line(self) -> str:
        text = f"{self.subject}: {self.detail}" if self.detail else self.subject
        return f"{'OK  ' if self.ok else 'FAIL'} {text}"


async def run_checks(config: DocktorConfig) -> list[CheckResult]:
    """Every online check for the config, in a stable order: Temporal, then per service its
    metric sources and its backend, then the LLM. Checks run concurrently; none raises."""
    project = names.project_name(config.project)
    sources: dict[str, MetricSource] = {}
    jobs: list[Awaitable[CheckResult]] = [_temporal_check(config)]
    try:
        # Checked as the worker will use them: through the plans the loops are started with.
        for spec in map(ServicePlan.from_spec, config.services):
            for kind in source_kinds(spec):
                jobs.append(_metric_check(spec, kind, sources))
            jobs.append(_backend_check(spec, project))
        if config.llm.provider != "none":
            jobs.append(_llm_check(config))
        return list(await asyncio.gather(*jobs))
    finally:
        for source in sources.values():
            # A connection that failed to open has nothing to close.
            with contextlib.suppress(Exception):
                await source.close()


async def _temporal_check(config: DocktorConfig) -> CheckResult:
    """The connection every entry point makes, with every layer applied, said as
    `temporal: 127.0.0.1:7233 (mTLS, profile prod)`; a refusal names its cause."""
    try:
        subject = f"temporal: {resolve(config).describe()}"
    except ConfigError as exc:
        return CheckResult(False, "temporal", "; ".join(exc.problems))
    try:
        await _deadline(connect(config))
    except TemporalUnreachable as exc:
        return CheckResult(False, subject, str(exc))
    except Exception as exc:  # an unreadable certificate (ConfigError), the deadline
        return CheckResult(False, subject, _problem(exc))
    return CheckResult(True, subject)


async def _metric_check(
    spec: ServicePlan, kind: str, sources: dict[str, MetricSource]
) -> CheckResult:
    subject = f"{spec.name}: metrics ({kind})"
    if kind == "nats" and spec.queue is not None:
        q = spec.queue
        subject = f"{spec.name}: stream {q.stream}, consumer {q.consumer} on {redact(q.url)}"
    try:
        # One instance per kind, shared like the worker's Sampler does, so one NATS server
        # is one connection however many services name it.
        if kind not in sources:
            sources[kind] = source_class(kind)()
        await _deadline(sources[kind].validate(spec))
    except Exception as exc:
        problem = _problem(exc)
        if kind == "nats" and spec.queue is not None:
            # The NATS source names its URL first; the subject already does.
            problem = problem.removeprefix(f"{redact(spec.queue.url)}: ")
        return CheckResult(False, subject, problem)
    return CheckResult(True, subject, "exist" if kind == "nats" else "source ready")


async def _backend_check(spec: ServicePlan, project: str) -> CheckResult:
    subject = f"{spec.name}: backend {spec.backend}"
    try:
        async with one_backend(spec) as backend:
            await _deadline(backend.validate(spec, project))
    except Exception as exc:
        return CheckResult(False, subject, _problem(exc))
    found = "command can run" if spec.backend == "processes" else "service found"
    return CheckResult(True, subject, found)


async def _llm_check(config: DocktorConfig) -> CheckResult:
    llm = LLMPlan.from_spec(config.llm)
    subject = f"llm: {llm.provider} {llm.model} at {llm.base_url}"
    try:
        problem = await _deadline(check_llm(llm))
    except Exception as exc:
        return CheckResult(False, subject, _problem(exc))
    if problem is not None:
        return CheckResult(False, subject, problem)
    return CheckResult(True, subject, "server answers and lists the model")


async def _deadline(work: Awaitable[T]) -> T:
    try:
        return await asyncio.wait_for(work, timeout=CHECK_TIMEOUT_S)
    except TimeoutError:
        raise TimeoutError(f"no answer within {CHECK_TIMEOUT_S:g}s") from None


def _problem(exc: BaseException) -> str:
    if isinstance(exc, ModuleNotFoundError):
        # A backend or source whose module is not installed (yet).
        return f"not available ({exc})"
    # A server's or plugin's words: one short printable line, no credentials.
    text = redact(str(exc)).strip().splitlines()
    return source_error(text[0]) if text else type(exc).__name__
