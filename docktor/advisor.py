"""The LLM advisor: asks an OpenAI-compatible server what to do, and trusts it only so far.

One client (the `openai` package) serves Docker Model Runner and any OpenAI-compatible API. The
model sees the rules' proposal and the facts behind it and answers with a JSON object
`{action, target_replicas, reason}`:

- `mode: advise`  - its target enters the policy at *recommend* and goes through the same
                    stabilise / limit (plus max_step) / bounds stages as the rules' own
                    (docktor.policy.settle);
- `mode: explain` - the rules decide; the model only writes the reason.

Whatever goes wrong - a timeout, a refused connection, an HTTP error, a reply past the byte
cap, text that is not JSON, a field of the wrong type, a target outside [min_replicas,
max_replicas] - the rules' proposal stands and `metadata.fallback` says why in a few words.
An out-of-bounds target is a fallback, not something to clamp: a model that does not respect
the bounds it was shown has not understood the question, so its reason cannot be trusted
either. A target within bounds that moves too far or against a window or cooldown is a
judgement the policy stages can trim, so it is used, adjusted, with a note in the reason.
Neither is a target below the current count while a metric is missing: it holds.

The API key comes from the worker's environment (api_key_for) and is handed straight to the
client: it is never part of an input, result, log line or error text produced here.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import httpx2
import openai
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from docktor.plan import LLMPlan
from docktor.policy import action_for, settle
from docktor.spec import ConfigError, format_number
from docktor.text import printable_line
from docktor.values import Advice, AdviseInput, Decision, Proposal, Provenance

log = logging.getLogger(__name__)

# How many recent decisions the model is shown: enough to see a trend or a flapping loop,
# few enough to keep the prompt small for a local model.
RECENT_DECISIONS = 5
# Every text in the prompt that a metric source or the loop wrote (a reason quotes a source's
# error) is one printable line of at most this many characters (a recent decision's: 160), so
# a hostile source can neither fill the prompt nor lay out instructions on lines of their own.
PROMPT_TEXT_MAX_CHARS = 300
PROMPT_NAME_MAX_CHARS = 100
# DMR and most local servers ignore the key, but the client insists on one.
NO_KEY = "not-needed"
REASON_PREFIX = "LLM: "
# A well-formed answer is well under 1 KB; anything much longer is not an answer, and holding
# it (and recording it) costs memory and history space.
REPLY_MAX_CHARS = 16_000
# The HTTP body of a reply is read through this cap: past it the client stops reading and drops
# the connection, so a server cannot push more than this into the worker's memory (a 100 MB
# reply read whole cost ~290 MB). The answer and its JSON envelope are a few hundred bytes.
REPLY_MAX_BYTES = 64 * 1024
# GET /models: a large catalogue (hundreds of models, each with a description) runs to a few MB.
MODELS_MAX_BYTES = 8 * 1024 * 1024
# Asked of the model so a well-behaved one stops long before the byte cap: the answer is ~100
# tokens; the rest is room for a model that writes a long reason (cut to REASON_MAX_CHARS).
ANSWER_MAX_TOKENS = 1000
# The model's reason is recorded in every decision, kept in the loop's state (50 of them) and
# in history: one readable sentence, cut to this length.
REASON_MAX_CHARS = 300
REDACTED = "[redacted]"

SYSTEM_PROMPT = """\
You advise an autoscaler for one service. You are shown its replica bounds, the current \
replica count, the latest metric observations, the scaling rules that matched, the rules' \
proposal, active cooldowns and recent decisions. Answer with ONE JSON object and nothing else:
{"action": "scale_up" | "scale_down" | "hold", "target_replicas": <integer>, "reason": "<one \
short sentence an operator can read>"}
target_replicas must be within [min_replicas, max_replicas]; action must agree with it \
(scale_up: above current, scale_down: below current, hold: equal to current)."""

EXPLAIN_PROMPT = """\
The decision below is already made by the rules and will not change. Answer with the same \
action and target_replicas as the proposal, and write the reason an operator should read."""


class LLMConfigError(ConfigError):
    """The llm block cannot be used as configured (e.g. a missing API key): exit 2 in the CLI."""

    def __init__(self, message: str) -> None:
        super().__init__([message])


class LLMUnavailable(Exception):
    """The LLM server could not be asked (unreachable, HTTP error); the message is one line."""


class ModelAnswer(BaseModel):
    """What the model must answer. Strict: "3" is not 3, and unknown keys are ignored."""

    model_config = ConfigDict(strict=True, extra="ignore")

    action: Literal["scale_up", "scale_down", "hold"]
    target_replicas: int = Field(ge=0)
    reason: str

    @field_validator("reason")
    @classmethod
    def _reason_not_blank(cls, value: str) -> str:
        # One line of printable text: the reason is shown in terminals (`docktor explain`),
        # where escape sequences or bidi overrides from a model would act, not be read. Cut to
        # REASON_MAX_CHARS only once an echoed key is redacted: a key cut in two is not found.
        value = printable_line(value, REPLY_MAX_CHARS)
        if not value:
            raise ValueError("must not be empty")
        return value


class _Fallback(Exception):
    """The model's answer cannot be used; the message is the short `fallback` reason."""


class ReplyRefused(Exception):
    """A reply the client stopped reading: past the byte cap, or compressed (which the cap
    cannot bound: 64 KiB of gzip can inflate to 64 MB). The message is a few words."""


def api_key_for(llm: LLMPlan) -> str | None:
    """The key the provider needs, from the environment (never from the config or the workflow
    input, so it cannot end up in history)."""
    if llm.provider != "openai":
        return None
    key = os.environ.get("OPENAI_API_KEY", "").strip()
    if not key:
        raise LLMConfigError("llm.provider openai needs OPENAI_API_KEY in the environment")
    return key


def client_for(
    llm: LLMPlan, api_key: str | None, max_bytes: int = REPLY_MAX_BYTES
) -> openai.AsyncOpenAI:
    """A client whose every reply body, an error's included, is read through `max_bytes`."""
    # A response hook, not a transport: it sees every response, also one through a proxy
    # transport httpx mounts from the environment.
    http_client = openai.DefaultAsyncHttpxClient(event_hooks={"response": [_body_cap(max_bytes)]})
    # No retries in the client: the activity has its own (at most one) retry, and a loop
    # iteration must not wait through the client's exponential backoff.
    return openai.AsyncOpenAI(
        base_url=llm.base_url,
        api_key=api_key or NO_KEY,
        timeout=llm.timeout_s,
        max_retries=0,
        # The cap counts bytes as they arrive: they must be the body itself.
        default_headers={"Accept-Encoding": "identity"},
        http_client=http_client,
    )


def _body_cap(max_bytes: int) -> Callable[[httpx2.Response], Awaitable[None]]:
    async def cap(response: httpx2.Response) -> None:
        # Runs once the headers are in, before the body is read.
        encoding = response.headers.get("content-encoding", "").strip().lower()
        if encoding not in ("", "identity"):
            raise ReplyRefused(f"compressed reply ({encoding[:20]})")
        length = response.headers.get("content-length", "").strip()
        if length.isdigit() and int(length) > max_bytes:
            raise ReplyRefused(_too_large(max_bytes))
        if not isinstance(response.stream, httpx2.AsyncByteStream):
            raise ReplyRefused("unexpected response stream")
        response.stream = _CappedBody(response.stream, max_bytes)

    return cap


class _CappedBody(httpx2.AsyncByteStream):
    """A body that ends in ReplyRefused past `limit` bytes; httpx then closes the connection
    (the rest of the reply is never read)."""

    def __init__(self, inner: httpx2.AsyncByteStream, limit: int) -> None:
        self._inner, self._limit = inner, limit

    async def __aiter__(self) -> AsyncIterator[bytes]:
        read = 0
        async for chunk in self._inner:
            read += len(chunk)
            if read > self._limit:
                raise ReplyRefused(_too_large(self._limit))
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


def _too_large(limit: int) -> str:
    return f"reply larger than {limit // 1024} KiB"


class Clients:
    """One client per model server for a worker's life: building one costs ~140 ms of CPU
    (its HTTP stack and TLS context), and a kept client reuses its connections. Must be used
    from one event loop (the worker's), and closed with it."""

    def __init__(self) -> None:
        self._clients: dict[tuple[str, str | None, float], openai.AsyncOpenAI] = {}

    def get(self, llm: LLMPlan, api_key: str | None) -> openai.AsyncOpenAI:
        key = (llm.base_url, api_key, llm.timeout_s)
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = client_for(llm, api_key)
        return client

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()


# ---- advise ----------------------------------------------------------------------------------


async def advise(
    request: AdviseInput, api_key: str | None = None, clients: Clients | None = None
) -> Advice:
    """The decision after advice. Never raises for anything the model or its server does.
    `clients`: the worker's kept clients (else one is built for this call and closed)."""
    llm, proposal = request.llm, request.proposal
    if llm.provider == "none":
        return _rules(proposal, Provenance(provider="none", model=None, llm_used=False))

    started = time.monotonic()
    try:
        answer = await _ask(llm, api_key, build_messages(request), clients)
        answer.reason = printable_line(_redact(answer.reason, api_key), REASON_MAX_CHARS)
        advice = _use(request, answer)
    except _Fallback as exc:
        return _fallback(request, str(exc), started)
    except Exception as exc:  # a bug or an unforeseen client error must not stall the loop
        return _fallback(request, f"unexpected {type(exc).__name__}", started)
    advice.metadata.latency_ms = _elapsed_ms(started)
    return advice


def _use(request: AdviseInput, answer: ModelAnswer) -> Advice:
    """The Advice from a well-formed answer, or _Fallback when it cannot be used."""
    llm, spec, proposal = request.llm, request.service, request.proposal
    current = proposal.current_replicas
    target = answer.target_replicas
    if not spec.min_replicas <= target <= spec.max_replicas:
        raise _Fallback(f"target {target} outside [{spec.min_replicas}, {spec.max_replicas}]")
    if answer.action != action_for(current, target):
        raise _Fallback(f"action {answer.action} contradicts target {target} (current {current})")
    provenance = Provenance(provider=llm.provider, model=llm.model, llm_used=True)

    if llm.mode == "explain":
        # The reason must describe the decision that is recorded, or it misleads the reader.
        if target != proposal.target_replicas:
            raise _Fallback(
                f"explanation is for {target} replicas, not the rules' {proposal.target_replicas}"
            )
        return Advice(
            action=proposal.action,
            target_replicas=proposal.target_replicas,
            reason=REASON_PREFIX + answer.reason,
            metadata=provenance,
        )

    # The model's target replaces the rules' recommendation: the memory as it was before
    # this evaluation, so the rules' recommendation does not also count in the windows.
    memory = request.memory.model_copy(deep=True)
    now = request.now or datetime.now(UTC)
    last_up, last_down = _last_scales(request, now)
    settled = settle(
        spec,
        current,
        target,
        memory,
        now,
        last_up,
        last_down,
        max_step=llm.max_step,
        missing=proposal.missing_metrics,
    )
    reason = REASON_PREFIX + answer.reason
    if settled.notes:
        reason += f" (guardrails: {'; '.join(settled.notes)})"
    return Advice(
        action=action_for(current, settled.replicas),  # type: ignore[arg-type]
        target_replicas=settled.replicas,
        reason=reason,
        metadata=provenance,
        memory=memory,
    )


def _redact(text: str, api_key: str | None) -> str:
    """A server that echoes the request's Authorization header back into the answer must not
    get the key recorded in the decision (and so in history and the JSONL)."""
    return text.replace(api_key, REDACTED) if api_key else text


def _last_scales(request: AdviseInput, now: datetime) -> tuple[datetime | None, datetime | None]:
    """The last scale-up and scale-down, as the workflow sends them; a request that carries only
    the seconds of cooldown left (an older workflow's) gets moments that leave exactly those."""
    last_up, last_down = request.last_scale_up_at, request.last_scale_down_at
    cooldown = request.service.cooldown
    if last_up is None and request.cooldown_up_left > 0:
        last_up = now - timedelta(seconds=cooldown.up - request.cooldown_up_left)
    if last_up is None and last_down is None and request.cooldown_down_left > 0:
        last_down = now - timedelta(seconds=cooldown.down - request.cooldown_down_left)
    return last_up, last_down


def _rules(proposal: Proposal, provenance: Provenance) -> Advice:
    return Advice(
        action=proposal.action,
        target_replicas=proposal.target_replicas,
        reason=proposal.reason,
        metadata=provenance,
    )


def _fallback(request: AdviseInput, why: str, started: float) -> Advice:
    llm = request.llm
    log.warning("LLM advice for %s not used: %s", request.service.name, why)
    provenance = Provenance(
        provider=llm.provider,
        model=llm.model,
        llm_used=False,
        fallback=why,
        latency_ms=_elapsed_ms(started),
    )
    return _rules(request.proposal, provenance)


def _elapsed_ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)


# ---- the exchange ----------------------------------------------------------------------------


async def _ask(
    llm: LLMPlan, api_key: str | None, messages: list[dict[str, str]], clients: Clients | None
) -> ModelAnswer:
    """One answer from the model, or _Fallback. The whole exchange (including the retry
    without response_format) is held to llm.timeout_s: the client's own timeout applies per
    read, so a server trickling bytes could otherwise hold the loop far longer."""
    client = clients.get(llm, api_key) if clients is not None else client_for(llm, api_key)
    try:
        async with asyncio.timeout(llm.timeout_s):
            content = await _complete(client, llm, messages)
    except TimeoutError:
        raise _Fallback(f"timeout after {format_number(llm.timeout_s)}s") from None
    except openai.APIError as exc:
        raise _Fallback(describe_api_error(exc, llm)) from None
    except ReplyRefused as exc:
        raise _Fallback(str(exc)) from None
    finally:
        if clients is None:
            await client.close()
    return parse_answer(content)


async def _complete(
    client: openai.AsyncOpenAI, llm: LLMPlan, messages: list[dict[str, str]]
) -> str:
    # OpenAI's own API names the limit max_completion_tokens (its reasoning models refuse
    # max_tokens); the OpenAI-compatible servers (DMR's llama.cpp, vLLM, Ollama) read max_tokens.
    name = "max_completion_tokens" if llm.provider == "openai" else "max_tokens"
    limit = {name: ANSWER_MAX_TOKENS}
    try:
        # Structured output where the server supports it: a JSON object, nothing around it.
        response = await client.chat.completions.create(
            model=llm.model,
            messages=messages,  # type: ignore[arg-type]
            response_format={"type": "json_object"},
            extra_body=limit,
        )
    except openai.BadRequestError:
        # Some OpenAI-compatible servers refuse response_format outright; ask again plainly
        # and rely on the strict parse instead.
        log.info("%s refused response_format; asking without it", llm.base_url)
        response = await client.chat.completions.create(
            model=llm.model,
            messages=messages,  # type: ignore[arg-type]
            extra_body=limit,
        )
    if not response.choices:
        raise _Fallback("empty reply")
    content = response.choices[0].message.content
    if not content or not content.strip():
        raise _Fallback("empty reply")
    return content


_FENCE_RE = re.compile(r"^```(?:json)?\s*\n?(.*?)\n?\s*```$", re.DOTALL | re.IGNORECASE)


def parse_answer(content: str) -> ModelAnswer:
    """A JSON object, alone or inside one ```json fence; nothing else is accepted (no digging
    for braces in prose: an answer that needs guessing is not an answer)."""
    if len(content) > REPLY_MAX_CHARS:
        raise _Fallback(f"reply too long ({len(content)} characters)")
    text = content.strip()
    fenced = _FENCE_RE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    try:
        data = json.loads(text)
    except ValueError:
        raise _Fallback("invalid JSON") from None
    if not isinstance(data, dict):
        raise _Fallback(f"expected a JSON object, got a {_json_type(data)}")
    try:
        return ModelAnswer.model_validate(data)
    except ValidationError as exc:
        raise _Fallback(_describe_invalid(exc)) from None


def _describe_invalid(exc: ValidationError) -> str:
    error = exc.errors()[0]
    name = ".".join(str(p) for p in error["loc"]) or "answer"
    kind = error["type"]
    if kind == "missing":
        return f"{name} is missing"
    if name == "target_replicas":
        if kind == "greater_than_equal":
            return "target_replicas must be >= 0"
        return "target_replicas must be an integer"
    if name == "action":
        return "action must be scale_up, scale_down or hold"
    if name == "reason":
        return "reason must be a non-empty string"
    return f"{name}: {error['msg']}"


def _json_type(value: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


def describe_api_error(exc: openai.APIError, llm: LLMPlan) -> str:
    """A few words for a failed request. Built from the status and the kind of failure only:
    the server's own message is left out, as nothing guarantees it does not echo a header."""
    if isinstance(exc, openai.APITimeoutError):
        return f"timeout after {format_number(llm.timeout_s)}s"
    if isinstance(exc, openai.APIConnectionError):
        return _connection_problem(exc)
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}"
    return type(exc).__name__


def _connection_problem(exc: BaseException) -> str:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionRefusedError) or (
            isinstance(current, OSError) and current.errno == errno.ECONNREFUSED
        ):
            return "connection refused"
        text = str(current).lower()
        if "connection refused" in text or "connect call failed" in text:
            return "connection refused"
        if "name or service not known" in text or "nodename nor servname" in text:
            return "unknown host"
        current = current.__cause__ or current.__context__
    return "connection error"


# ---- the prompt ------------------------------------------------------------------------------


def build_messages(request: AdviseInput) -> list[dict[str, str]]:
    """A system message with the answer format and a user message with the facts as compact
    JSON: small local models follow a short, regular prompt best."""
    system = SYSTEM_PROMPT
    if request.llm.mode == "explain":
        system += "\n" + EXPLAIN_PROMPT
    facts = json.dumps(prompt_facts(request), separators=(",", ":"), default=str)
    return [{"role": "system", "content": system}, {"role": "user", "content": facts}]


def prompt_facts(request: AdviseInput) -> dict[str, Any]:
    spec, proposal = request.service, request.proposal
    facts: dict[str, Any] = {
        "service": spec.name,
        "min_replicas": spec.min_replicas,
        "max_replicas": spec.max_replicas,
        "current_replicas": proposal.current_replicas,
        "observations": {
            printable_line(k, PROMPT_NAME_MAX_CHARS): _round(v)
            for k, v in sorted(proposal.observations.items())
        },
        "matched_rules": [printable_line(r, PROMPT_TEXT_MAX_CHARS) for r in proposal.matched_rules],
        "rules_proposal": {
            "action": proposal.action,
            "target_replicas": proposal.target_replicas,
            "reason": printable_line(proposal.reason, PROMPT_TEXT_MAX_CHARS),
        },
        "cooldown_seconds_left": {
            "up": round(request.cooldown_up_left),
            "down": round(request.cooldown_down_left),
        },
        "recent_decisions": [_brief(d) for d in request.recent[-RECENT_DECISIONS:]],
    }
    if proposal.missing_metrics:
        facts["not_observed"] = [
            printable_line(name, PROMPT_NAME_MAX_CHARS) for name in proposal.missing_metrics
        ]
    if request.llm.mode == "advise":
        facts["max_step"] = request.llm.max_step
    return facts


def _brief(decision: Decision) -> dict[str, Any]:
    return {
        "at": decision.timestamp.isoformat(timespec="seconds"),
        "action": decision.action,
        "from": decision.current_replicas,
        "to": decision.target_replicas,
        "reason": printable_line(decision.reason, 160),
    }


def _round(value: float) -> float | int:
    return int(value) if float(value).is_integer() else round(value, 2)


# ---- listing models and the start-up check ---------------------------------------------------


async def list_models(llm: LLMPlan, api_key: str | None = None) -> list[str]:
    """The model ids the server offers (GET {base_url}/models), or LLMUnavailable."""
    client = client_for(llm, api_key, MODELS_MAX_BYTES)
    try:
        async with asyncio.timeout(llm.timeout_s):
            page = await client.models.list()
            return [model.id async for model in page]
    except TimeoutError:
        raise LLMUnavailable(
            f"LLM server at {llm.base_url}: no answer within {format_number(llm.timeout_s)}s"
        ) from None
    except openai.APIStatusError as exc:
        raise LLMUnavailable(
            f"LLM server at {llm.base_url} answered HTTP {exc.status_code} to GET /models"
        ) from None
    except openai.APIError as exc:
        raise LLMUnavailable(
            f"cannot reach the LLM server at {llm.base_url}: {describe_api_error(exc, llm)}"
        ) from None
    except ReplyRefused as exc:
        raise LLMUnavailable(f"LLM server at {llm.base_url}: {exc} to GET /models") from None
    finally:
        await client.close()


async def check_llm(llm: LLMPlan) -> str | None:
    """None when the server answers and lists the configured model; otherwise one line saying
    what is wrong. The worker calls this once at start-up."""
    if llm.provider == "none":
        return None
    try:
        models = await list_models(llm, api_key_for(llm))
    except (LLMConfigError, LLMUnavailable) as exc:
        return str(exc)
    if llm.model not in models:
        offered = ", ".join(models[:10]) or "none"
        return f"model '{llm.model}' is not offered by {llm.base_url} (available: {offered})"
    return None
