"""docktor.yaml -> pydantic models.

Two forms are accepted: the multi-service form (``services: [...]``) and the older single-service
form of the Go tool (``service`` + ``scaling``), which is normalised here into one service so
nothing downstream knows it existed. Validation is offline: it reads the file alone and never
touches the network, Docker, or the files the config names.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import reprlib
from collections.abc import Hashable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from docktor.loop import names

DEFAULT_CONFIG_NAME = "docktor.yaml"
SCRIPT_SUFFIXES = (".py", ".sh", ".js", ".rb", ".pl")
# ServiceSpec fields the loader fills in; never suggested for a typo.
LOADER_FIELDS = ("project", "workdir", "state_dir")

Operator = Literal[">", ">=", "<", "<=", "==", "!="]
# Any backend an installed package registers (docktor.plugins): processes, compose, swarm, ...
Backend = str

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """Seconds from a number (seconds, as the Go tool wrote them) or a string like '30s', '2m'."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 30, '30s' or '2m'")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"must be a finite duration, not {_short(value)}")
        return float(value)
    if isinstance(value, str):
        match = _DURATION_RE.match(value)
        if match:
            return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    raise ValueError(f"must be a duration such as 30, '30s' or '2m', not {_short(value)}")


# The validation context of a file a user wrote (see Strict).
USER_CONFIG = {"user_config": True}
# Added to it where plugins must not be loaded (an update validator runs inside the workflow):
# the kind-specific checks of `queue:` and `backend:` are then left to the worker.
NO_PLUGINS = "no_plugins"

# The longest duration a user's file may set. Every duration becomes a durable timer or a
# timedelta in the workflow, and one beyond what those can hold (timedelta stops at ~2.7e6
# years) would fail the loop's workflow task on every attempt instead of being refused here.
MAX_DURATION_S = 366 * 24 * 3600.0
# The most replicas a user's file may ask for: Kubernetes' int32, and it keeps every count
# within the Int (int64) search attribute DocktorReplicas.
MAX_REPLICAS = 2**31 - 1
# A name is a workflow id part, a Compose label, a DNS alias on the service's networks (so at
# most one 63-character DNS label) and a folder under state_dir.
MAX_NAME_LENGTH = 63
# A service name: a Compose service name that is also a plain file name (no '/', no '..' of
# its own, nothing a shell or a label would need quoted).
SERVICE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
# Compose's own rule for project names (compose-go's NormalizeProjectName / its validation).
PROJECT_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]*")


def _in_user_config(info: ValidationInfo) -> bool:
    return bool((info.context or {}).get("user_config"))


def _duration_limit(value: float, info: ValidationInfo) -> float:
    """Checked only in a user's file: a payload of a running loop keeps decoding whatever the
    limit of the release that reads it."""
    if _in_user_config(info) and value > MAX_DURATION_S:
        raise ValueError(f"must be at most 366 days ({MAX_DURATION_S:.0f}s), not {value:g}s")
    return value


Duration = Annotated[float, BeforeValidator(parse_duration), AfterValidator(_duration_limit)]
PositiveDuration = Annotated[Duration, Field(gt=0)]
NonNegativeDuration = Annotated[Duration, Field(ge=0)]


def check_replica_limit(value: int, info: ValidationInfo) -> int:
    if _in_user_config(info) and value > MAX_REPLICAS:
        raise ValueError(f"must be at most {MAX_REPLICAS}")
    return value


def check_service_name(value: str, info: ValidationInfo) -> str:
    """The length limit of a service name, in a user's file (the pattern applies everywhere)."""
    if _in_user_config(info) and len(value) > MAX_NAME_LENGTH:
        raise ValueError(f"is {len(value)} characters long; at most {MAX_NAME_LENGTH} are allowed")
    return value


def check_project_name(value: str | None, info: ValidationInfo) -> str | None:
    if value is None or not _in_user_config(info):
        return value
    if not PROJECT_NAME_RE.fullmatch(value) or len(value) > MAX_NAME_LENGTH:
        raise ValueError(
            f"{_short(value)} is not a valid project name: use at most {MAX_NAME_LENGTH} "
            "lowercase letters, digits, '-' or '_', starting with a letter or digit (as Compose "
            "requires)"
        )
    return value


# Values quoted in error lines: short, whatever the file holds (a long string, or a YAML alias
# that expands to an enormous nested list, must not become an enormous message).
_REPR = reprlib.Repr()
_REPR.maxstring = 80
_REPR.maxother = 80
_REPR.maxlevel = 3


def _short(value: Any) -> str:
    return _REPR.repr(value)


class Strict(BaseModel):
    """In a user's file, unknown keys are typos: refuse them rather than silently ignore a
    setting. The same models also travel in workflow and activity payloads, where a field that
    one release added or removed must not make a running loop's history undecodable: there
    (any validation without the USER_CONFIG context) unknown keys are dropped, and every field
    has a default so a missing one is filled in."""

    # allow_inf_nan=False: a payload is JSON, where NaN and infinity become null, so a file
    # that says `value: .inf` would start a loop whose input no worker can decode.
    model_config = ConfigDict(extra="forbid", frozen=False, allow_inf_nan=False)

    # Fields that still load because older files set them, but that change nothing: field ->
    # why. Setting one in a file gives one warning line (ignored_settings), not an error.
    IGNORED_FIELDS: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _tolerate_unknown_fields_on_the_wire(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, dict) and not (info.context or {}).get("user_config"):
            return {key: value for key, value in data.items() if key in cls.model_fields}
        return data

    def ignored_here(self) -> dict[str, str]:
        """The IGNORED_FIELDS this model's input set: field -> why."""
        return {
            name: why for name, why in self.IGNORED_FIELDS.items() if name in self.model_fields_set
        }


class Condition(Strict):
    metric: str = Field(min_length=1)
    op: Operator
    value: float

    def holds(self, observed: float) -> bool:
        match self.op:
            case ">":
                return observed > self.value
            case ">=":
                return observed >= self.value
            case "<":
                return observed < self.value
            case "<=":
                return observed <= self.value
            case "==":
                return observed == self.value
            case "!=":
                return observed != self.value
        raise AssertionError(self.op)

    def describe(self, observed: float | None = None) -> str:
        """`queue.backlog 812 > 500` with the observed value, `queue.backlog > 500` without."""
        value = format_number(self.value)
        if observed is None:
            return f"{self.metric} {self.op} {value}"
        return f"{self.metric} {format_number(observed)} {self.op} {value}"


def format_number(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else f"{number:.2f}".rstrip("0")


class Rules(Strict):
    scale_up_when: list[Condition] = Field(default_factory=list)
    scale_down_when: list[Condition] = Field(default_factory=list)


class Cooldown(Strict):
    """Per-direction quiet time after a scale action. Scaling up must react fast to a burst;
    scaling down waits longer so a short lull does not throw away capacity (as the HPA's
    5-minute scale-down stabilisation does, shortened for queue consumers)."""

    up: NonNegativeDuration = 30.0
    down: NonNegativeDuration = 120.0


# Defaults of the target policy, chosen from `docktor bench control` (README: Control quality).
DEFAULT_QUEUE_TARGET = {"queue.backlog_per_replica": 100.0}
DEFAULT_HEADROOM = 0.0
DEFAULT_DRAIN_WITHIN = 10.0
DEFAULT_DOWN_WINDOW = 90.0
DEFAULT_TARGET_INTERVAL = 4.0
# The step policy's defaults, unchanged since the first release so that old files behave the same.
STEP_COOLDOWN = Cooldown(up=30.0, down=120.0)
STEP_INTERVAL = 15.0
PER_REPLICA_SUFFIX = "_per_replica"


class RateLimit(Strict):
    """At most `replicas` or `percent` % of the count at the period's start, whichever allows
    more (the HPA's `selectPolicy: Max`), per `period`. Neither set: no limit."""

    replicas: int | None = Field(default=None, ge=1, strict=True)
    percent: float | None = Field(default=None, gt=0)
    period: PositiveDuration = 15.0


class Direction(Strict):
    """How one direction of scaling is tempered (the HPA's `behavior.scaleUp/scaleDown`).

    window: the stabilisation window. Scaling down goes no lower than the highest
    recommendation of the last `window` seconds (scaling up: no higher than the lowest), so a
    lull shorter than the window does not give capacity back.
    """

    window: NonNegativeDuration = 0.0
    limit: RateLimit = Field(default_factory=RateLimit)


def _default_down() -> Direction:
    return Direction(window=DEFAULT_DOWN_WINDOW)


class Behavior(Strict):
    up: Direction = Field(default_factory=Direction)
    down: Direction = Field(default_factory=_default_down)


class RateTracking(Strict):
    """The rate feed-forward of the target policy for a queue service.

    Capacity for what arrives: ceil((rate_in x (1 + headroom) + backlog / drain_within) /
    per_replica), where per_replica is the msg/s one replica handles: given here, or estimated
    from rate_out per replica while the pool is saturated (work waiting at both samples).
    """

    enabled: bool = True
    per_replica: float | None = Field(default=None, gt=0)
    headroom: float = Field(default=DEFAULT_HEADROOM, ge=0, le=10)
    drain_within: PositiveDuration = DEFAULT_DRAIN_WITHIN
    # Weight of a new estimate of per_replica (exponential smoothing); 1 keeps only the latest.
    smoothing: float = Field(default=0.5, gt=0, le=1)


class Predict(Strict):
    """Predictive pre-scaling (docktor/policy/forecast/): learn the rhythm of queue.rate_in
    and, when confident, have capacity for the rate expected `lead` seconds from now.

    lead: how far ahead to look; unset, one check interval plus `startup` (a replica asked for
    now serves after `startup`, and the next check is one interval away). The recommendation is
    never lowered by a forecast, and passes the same windows, limits and bounds.
    """

    enabled: bool = False
    lead: PositiveDuration | None = None
    # Seconds from asking for a replica to its first message, for the default lead.
    startup: NonNegativeDuration = 5.0
    # Chance-corrected share of the rate's variance that the rhythm explains (0..1).
    min_confidence: float = Field(default=0.8, gt=0, le=1)
    # Cycles the rhythm must have repeated (and the cycles a period is judged on).
    min_cycles: int = Field(default=3, ge=2, le=10, strict=True)
    # Capacity above the predicted rate, as a fraction (bursts vary in size).
    headroom: float = Field(default=0.1, ge=0, le=10)
    # While the rhythm is trusted, the scale-down window is at most this long: the forecast,
    # not the window, brings the capacity back before the next burst.
    down_window: NonNegativeDuration = 0.0

    def lead_for(self, check_interval: float) -> float:
        return self.lead if self.lead is not None else check_interval + self.startup


class Activation(Strict):
    """Scale to zero (min_replicas 0): wake when more than `threshold` messages wait; go to
    zero only after the queue has been idle (nothing waiting, in flight or arriving) for
    `idle_for`."""

    threshold: float = Field(default=0, ge=0)
    idle_for: NonNegativeDuration = 300.0


class Fallback(Strict):
    """After `after` consecutive observations without any metric, go to `replicas` (KEDA's
    `fallback`); never below the current count: missing data never scales anything down."""

    after: int = Field(default=3, ge=1, strict=True)
    replicas: int = Field(ge=0, strict=True)


class QueueSpec(Strict):
    """The `queue:` block as the core knows it: the metric source kind that reads it and which
    of its metrics to collect (empty: all). Each kind subclasses this with its own fields
    (docktor.sources.nats.NatsQueueSpec; docs/plugins.md), and a user's file is validated
    against that model, found through the kind's entry point."""

    kind: str = "nats"
    metrics: list[str] = Field(default_factory=list)


class AnyQueue(QueueSpec):
    """A `queue:` block as it travels in workflow and activity payloads: every field kept,
    whatever the kind. The workflow never loads plugins; the worker's source reads the block
    as its own model (docktor.sources.queue_block)."""

    model_config = ConfigDict(extra="allow")
    # What the kind's own model found ignored in a user's file (its IGNORED_FIELDS), for the
    # loader's warnings: this block no longer knows the kind's fields.
    _ignored: dict[str, str] = PrivateAttr(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _tolerate_unknown_fields_on_the_wire(cls, data: Any, info: ValidationInfo) -> Any:
        return data  # keep them: they are the kind's own fields

    def ignored_here(self) -> dict[str, str]:
        return dict(self._ignored)


class _QueueKind(BaseModel):
    """Only the `kind` of a queue block, so that an unknown kind is reported at queue.kind."""

    kind: str = "nats"

    @field_validator("kind")
    @classmethod
    def _installed(cls, value: str) -> str:
        from docktor import sources as metrics  # not at import time: sources import this module

        known = metrics.queue_kinds()
        if value in known:
            return value
        installed = f"(installed: {', '.join(known) or 'none'})"
        if value in metrics.kinds():
            # Installed, but its class cannot be loaded (that says why), or it is a source
            # picked by the metrics the rules name, with no block of its own (docker).
            try:
                metrics.source_class(value)
            except metrics.MetricConfigError as exc:
                raise ValueError(str(exc)) from None
            raise ValueError(f"the {value} source is not configured by a queue: block {installed}")
        raise ValueError(f"unknown queue kind {_short(value)} {installed}")


def _queue_of_its_kind(value: Any, info: ValidationInfo) -> Any:
    """A user's `queue:` block is validated by its kind's own model, with that model's field
    paths in the errors. Anywhere else (payloads, and update validators in the workflow,
    which loads no plugins) -> AnyQueue, which keeps every field for the worker's source to read."""
    if not isinstance(value, dict):
        return value
    if not _in_user_config(info) or (info.context or {}).get(NO_PLUGINS):
        return AnyQueue.model_validate(value, context=info.context)
    from docktor import sources as metrics

    kind = _QueueKind.model_validate({"kind": value.get("kind", "nats")}).kind
    source = metrics.source_class(kind)
    assert source.config_model is not None  # queue_kinds() lists only those with one
    queue = source.config_model.model_validate(value, context=info.context)
    known = {*source.provides, *source.rates}
    unknown = [name for name in queue.metrics if name not in known]
    if unknown:
        problem = (
            f"unknown {kind} metric {', '.join(map(_short, unknown))} "
            f"(known: {', '.join(source.provides)})"
        )
        # Raised as a validation error at queue.metrics, where the file has the names.
        raise ValidationError.from_exception_data(
            "QueueSpec",
            [
                {
                    "type": PydanticCustomError("unknown_metric", problem),
                    "loc": ("metrics",),
                    "input": queue.metrics,
                }
            ],
        )
    # Kept as it will travel, so a loaded config and the payloads made of it are one thing.
    carried = AnyQueue.model_validate(queue.model_dump())
    carried._ignored = queue.ignored_here()
    return carried


def _installed_backend(value: str, info: ValidationInfo) -> str:
    """A user's `backend:` must name an installed backend (an entry point of docktor.scalers)."""
    if not _in_user_config(info) or (info.context or {}).get(NO_PLUGINS):
        return value
    from docktor import plugins

    known = plugins.names(plugins.BACKENDS)
    if value not in known:
        raise ValueError(
            f"must be one of the installed backends ({', '.join(known) or 'none'}), "
            f"not {_short(value)}"
        )
    try:
        plugins.load(plugins.BACKENDS, value)
    except plugins.NotInstalled as exc:  # installed, but its class cannot be loaded: say why
        raise ValueError(str(exc)) from None
    return value


class ServiceSpec(Strict):
    name: str = Field(min_length=1, pattern=SERVICE_NAME_PATTERN)
    backend: Backend = Field(default="compose", min_length=1)
    min_replicas: int = Field(default=1, ge=0, strict=True)
    max_replicas: int = Field(default=10, ge=1, strict=True)
    # Defaults depend on the policy (filled in by _policy_defaults): 15 s for step, 4 s for
    # target.
    check_interval: PositiveDuration = STEP_INTERVAL
    # CPU is averaged and rates measured over about this long (see `window`); unset: one
    # check interval, which is what every release before it did whatever the file said.
    metrics_window: PositiveDuration | None = None
    scale_up_by: int = Field(default=1, ge=1, strict=True)
    scale_down_by: int = Field(default=1, ge=1, strict=True)
    # step: 30 s up / 120 s down unless set; target: none unless set (its windows do that job).
    cooldown: Cooldown = Field(default_factory=Cooldown)
    # How the raw recommendation is made: `step` (the rules: threshold -> fixed step) or
    # `target` (target tracking with rate feed-forward). Unset: step when rules are given,
    # otherwise target.
    policy: Literal["step", "target"] | None = None
    rules: Rules = Field(default_factory=Rules)
    # target: what one replica should carry, metric -> value. `X_per_replica` divides the
    # metric X by the replica count (queue.backlog_per_replica: 100); any other metric is
    # already an average (cpu.avg_pct: 60). Several targets: the largest count wins.
    target: dict[str, float] = Field(default_factory=dict)
    # A deviation from the target within this fraction changes nothing (the HPA's 10%).
    tolerance: float = Field(default=0.1, ge=0, lt=1)
    rate: RateTracking = Field(default_factory=RateTracking)
    behavior: Behavior = Field(default_factory=Behavior)
    activation: Activation = Field(default_factory=Activation)
    predict: Predict = Field(default_factory=Predict)
    fallback: Fallback | None = None
    # The kind's own model in a user's file, AnyQueue in a payload (_queue_of_its_kind).
    queue: SerializeAsAny[QueueSpec] | None = None
    command: list[str] | None = None
    env: dict[str, str] = Field(default_factory=dict)
    # Seconds a replica gets between SIGTERM and SIGKILL when it is stopped.
    stop_grace_period: NonNegativeDuration = 10.0
    # `manual`: every scale decision waits for `docktor approve|reject`, at most
    # approval_timeout, then lapses as an `expired` decision. `auto` applies at once.
    approval: Literal["auto", "manual"] = "auto"
    approval_timeout: PositiveDuration = 600.0
    # Filled in by the loader: the project the service belongs to (Compose's project name), the
    # folder relative paths resolve against, and where the processes backend keeps pid files.
    # Not written by users.
    project: str | None = None
    workdir: str | None = None
    state_dir: str | None = None

    @field_validator("name")
    @classmethod
    def _name_length(cls, value: str, info: ValidationInfo) -> str:
        return check_service_name(value, info)

    @field_validator("min_replicas")
    @classmethod
    def _min_limit(cls, value: int, info: ValidationInfo) -> int:
        return check_replica_limit(value, info)

    @field_validator("max_replicas")
    @classmethod
    def _max_not_below_min(cls, value: int, info: ValidationInfo) -> int:
        low = info.data.get("min_replicas")
        if low is not None and value < low:
            raise ValueError(f"must be >= min_replicas ({low})")
        return check_replica_limit(value, info)

    @field_validator("command")
    @classmethod
    def _command_not_empty(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("must name a program to run, e.g. ['python', 'consumer.py']")
        return value

    @field_validator("backend")
    @classmethod
    def _backend_installed(cls, value: str, info: ValidationInfo) -> str:
        return _installed_backend(value, info)

    @field_validator("queue", mode="before")
    @classmethod
    def _queue_kind(cls, value: Any, info: ValidationInfo) -> Any:
        return _queue_of_its_kind(value, info)

    @model_validator(mode="after")
    def _backend_needs(self, info: ValidationInfo) -> ServiceSpec:
        """What the backend itself requires of a service (the processes backend: a command),
        asked of the backend class: `check(spec)` raises ValueError('field: problem')."""
        if not _in_user_config(info) or (info.context or {}).get(NO_PLUGINS):
            return self
        from docktor import plugins

        try:
            backend = plugins.load(plugins.BACKENDS, self.backend)
        except plugins.NotInstalled:
            return self  # reported at `backend` already
        check = getattr(backend, "check", None)
        if check is not None:
            check(self)
        return self

    @field_validator("target")
    @classmethod
    def _targets_positive(cls, value: dict[str, float]) -> dict[str, float]:
        for metric, wanted in value.items():
            if not metric or not re.match(r"^[a-z][a-z0-9_]*\.[a-z0-9_.]+$", metric):
                raise ValueError(f"{metric!r} is not a metric name such as cpu.avg_pct")
            if not math.isfinite(wanted) or wanted <= 0:
                raise ValueError(f"{metric}: must be a number > 0, not {wanted!r}")
        return value

    @model_validator(mode="after")
    def _policy_defaults(self) -> ServiceSpec:
        """Resolve the policy and the defaults that depend on it. Only fields the file did not
        set are filled, so an old file (rules, no policy) behaves exactly as it did."""
        given = self.model_fields_set
        has_rules = bool(self.rules.scale_up_when or self.rules.scale_down_when)
        if self.policy is None:
            if has_rules and self.target:
                raise ValueError(
                    "policy: both rules and target are set; choose policy: step or target"
                )
            self.policy = "step" if has_rules or not (self.target or self.queue) else "target"
        if self.policy == "target":
            if not self.target and self.queue is not None:
                self.target = dict(DEFAULT_QUEUE_TARGET)
            if not self.target and not (self.queue and self.rate.enabled):
                raise ValueError(
                    "target: required for policy target without a queue, e.g. {cpu.avg_pct: 60}"
                )
            if "cooldown" not in given:
                self.cooldown = Cooldown(up=0.0, down=0.0)
            if "check_interval" not in given:
                self.check_interval = DEFAULT_TARGET_INTERVAL
        else:
            if "cooldown" not in given:
                self.cooldown = STEP_COOLDOWN.model_copy()
            if "behavior" not in given:
                # The step rules had no windows; an old file keeps behaving as it did.
                self.behavior = Behavior(down=Direction())
        if self.metrics_window is None:
            # Filled in, not left None: a payload must decode in a release that requires a
            # number here (every release before this one did).
            self.metrics_window = self.check_interval
        return self

    @model_validator(mode="after")
    def _predict_needs_rate(self) -> ServiceSpec:
        if self.predict.enabled and (self.queue is None or not self.rate.enabled):
            raise ValueError(
                "predict: needs a queue with rate tracking (it learns the rhythm of "
                "queue.rate_in); add `queue:` or set predict.enabled: false"
            )
        return self

    @property
    def window(self) -> float:
        """Seconds the metrics are averaged over: `metrics_window` (one check interval unless
        the file set it)."""
        return self.metrics_window or self.check_interval

    def metric_names(self) -> set[str]:
        rules = self.rules.scale_up_when + self.rules.scale_down_when
        names = {c.metric for c in rules}
        if self.policy == "target":
            names |= {m.removesuffix(PER_REPLICA_SUFFIX) for m in self.target}
            if self.queue is not None and self.rate.enabled:
                # The feed-forward reads these; `explain` shows what the policy looked at.
                names |= {"queue.backlog", "queue.rate_in", "queue.rate_out"}
        return names


class TemporalSpec(Strict):
    address: str = "127.0.0.1:7233"
    namespace: str = "default"
    task_queue: str = names.TASK_QUEUE


# Where each provider's OpenAI-compatible API lives when `base_url` is not given.
DEFAULT_BASE_URLS = {
    "none": "http://localhost:12434/engines/llama.cpp/v1",
    "dmr": "http://localhost:12434/engines/llama.cpp/v1",
    "openai": "https://api.openai.com/v1",
}


class LLMSpec(Strict):
    # An `llm` block that names no provider means Docker Model Runner; no `llm` block at all
    # means rules only (DocktorConfig's default below).
    provider: Literal["none", "dmr", "openai"] = "dmr"
    base_url: str = ""  # empty: the provider's own (DEFAULT_BASE_URLS)
    model: str = "ai/granite-4.0-h-micro"
    mode: Literal["advise", "explain"] = "advise"
    timeout_s: PositiveDuration = 10.0
    max_step: int = Field(default=2, ge=1)
    required: bool = False

    @model_validator(mode="after")
    def _provider_url(self) -> LLMSpec:
        if not self.base_url:
            self.base_url = DEFAULT_BASE_URLS[self.provider]
        return self


_VERSION_IGNORED = "there is one format; a file needs no version"


class DocktorConfig(Strict):
    IGNORED_FIELDS: ClassVar[dict[str, str]] = {"version": _VERSION_IGNORED}

    version: int = 1
    project: str | None = None
    compose_file: str | None = None
    state_dir: str = ".docktor"
    journal: str | None = None
    temporal: TemporalSpec = Field(default_factory=TemporalSpec)
    llm: LLMSpec = Field(default_factory=lambda: LLMSpec(provider="none"))
    services: list[ServiceSpec] = Field(min_length=1)
    # One line per setting of the file that loads but changes nothing (ignored_settings).
    _warnings: list[str] = PrivateAttr(default_factory=list)

    @field_validator("project")
    @classmethod
    def _project_name(cls, value: str | None, info: ValidationInfo) -> str | None:
        return check_project_name(value, info)

    @model_validator(mode="after")
    def _unique_names(self) -> DocktorConfig:
        if problems := duplicate_names([service.name for service in self.services]):
            raise ValueError(problems[0])
        return self

    @property
    def warnings(self) -> list[str]:
        return list(self._warnings)

    def service(self, name: str) -> ServiceSpec:
        for service in self.services:
            if service.name == name:
                return service
        raise KeyError(name)

    def service_names(self) -> list[str]:
        return [s.name for s in self.services]

    def workflow_id(self, service: str) -> str:
        return f"docktor-{self.project}-{service}"

    @property
    def journal_path(self) -> str:
        return self.journal or str(Path(self.state_dir) / "decisions.jsonl")


# ---- the Go tool's single-service form ------------------------------------------------------


class LegacyScaling(Strict):
    cpu_high: float = 80.0
    cpu_low: float = 20.0
    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=10, ge=1)
    scale_up_by: int = Field(default=2, ge=1)
    scale_down_by: int = Field(default=1, ge=1)
    check_interval: PositiveDuration = 10.0
    metrics_window: PositiveDuration = 10.0

    @field_validator("min_replicas")
    @classmethod
    def _min_limit(cls, value: int, info: ValidationInfo) -> int:
        return check_replica_limit(value, info)

    @field_validator("max_replicas")
    @classmethod
    def _max_not_below_min(cls, value: int, info: ValidationInfo) -> int:
        return ServiceSpec._max_not_below_min(value, info)

    @field_validator("cpu_low")
    @classmethod
    def _low_below_high(cls, value: float, info: ValidationInfo) -> float:
        high = info.data.get("cpu_high")
        if high is not None and value >= high:
            raise ValueError(f"must be < cpu_high ({format_number(high)})")
        return value


class LegacyConfig(Strict):
    IGNORED_FIELDS: ClassVar[dict[str, str]] = {"version": _VERSION_IGNORED}

    version: int | str | None = None
    # The same rule as a service's name, so a bad one is reported at `service`, where the
    # file has it, not at the services[0].name it becomes.
    service: str = Field(min_length=1, pattern=SERVICE_NAME_PATTERN)
    compose_file: str | None = None
    project: str | None = None
    scaling: LegacyScaling = Field(default_factory=LegacyScaling)
    llm: LLMSpec = Field(default_factory=lambda: LLMSpec(provider="none"))
    temporal: TemporalSpec = Field(default_factory=TemporalSpec)

    @field_validator("service")
    @classmethod
    def _name_length(cls, value: str, info: ValidationInfo) -> str:
        return check_service_name(value, info)

    @field_validator("project")
    @classmethod
    def _project_name(cls, value: str | None, info: ValidationInfo) -> str | None:
        return check_project_name(value, info)

    def to_multi(self) -> dict[str, Any]:
        s = self.scaling
        return {
            "project": self.project,
            "compose_file": self.compose_file,
            "llm": self.llm.model_dump(),
            "temporal": self.temporal.model_dump(),
            "services": [
                {
                    "name": self.service,
                    "backend": "compose",
                    "min_replicas": s.min_replicas,
                    "max_replicas": s.max_replicas,
                    "scale_up_by": s.scale_up_by,
                    "scale_down_by": s.scale_down_by,
                    "check_interval": s.check_interval,
                    "metrics_window": s.metrics_window,
                    "rules": {
                        "scale_up_when": [
                            {"metric": "cpu.avg_pct", "op": ">", "value": s.cpu_high}
                        ],
                        "scale_down_when": [
                            {"metric": "cpu.avg_pct", "op": "<", "value": s.cpu_low}
                        ],
                    },
                }
            ],
        }


# ---- loading ---------------------------------------------------------------------------------


class ConfigError(Exception):
    """A config that cannot be used; `problems` holds one line per fault, field path first."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class _UniqueKeyLoader(yaml.SafeLoader):
    """A key written twice is a mistake whichever copy was meant: refuse it, don't pick one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                # As SafeLoader itself says it (`? [a, b]: 1`); a set lookup would raise a
                # TypeError instead.
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    "found unhashable key",
                    key_node.start_mark,
                )
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def default_config_path() -> Path:
    return Path(os.environ.get("DOCKTOR_CONFIG", DEFAULT_CONFIG_NAME))


def load_config(path: str | Path | None = None) -> DocktorConfig:
    """Read, validate and normalise a config file. Raises ConfigError with readable lines."""
    config_path = Path(path) if path else default_config_path()
    try:
        text = config_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        # A file nobody named: say how to name one.
        hint = "" if path else " (pass --config FILE, or set DOCKTOR_CONFIG)"
        raise ConfigError([f"{config_path}: no such file{hint}"]) from None
    except OSError as exc:
        raise ConfigError([f"{config_path}: cannot read ({exc.strerror})"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [
                f"{config_path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
                f"{exc.start})"
            ]
        ) from None
    return parse_config(text, base_dir=config_path.resolve().parent, source=str(config_path))


def parse_config(text: str, base_dir: Path, source: str = DEFAULT_CONFIG_NAME) -> DocktorConfig:
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError([_one_line(f"{where}: YAML syntax error: {problem}")]) from None
    except RecursionError:
        # PyYAML composes nested blocks recursively; a config is never this deep.
        raise ConfigError([f"{source}: YAML nested too deeply"]) from None
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise ConfigError([f"{source}: must be a mapping of settings, but the file is {kind}"])
    if problems := _non_text_keys(data, source):
        raise ConfigError(problems)

    try:
        if "services" not in data and ("service" in data or "scaling" in data):
            legacy = _validate(LegacyConfig, data)
            config = _validate(DocktorConfig, legacy.to_multi())
            config._warnings = ignored_settings(legacy)
        else:
            config = _validate(DocktorConfig, data, _raw_duplicates(data))
            config._warnings = ignored_settings(config)
        return _resolve(config, base_dir, source)
    except RecursionError:
        # A YAML alias can make a structure that contains itself.
        raise ConfigError([f"{source}: a value contains itself (a recursive YAML alias)"]) from None


def _non_text_keys(data: Any, source: str) -> list[str]:
    """Every mapping key that is not a string (`1:`, `~:`, `on:` in YAML 1.1), by its path.
    Validation would report such a key at a path indistinguishable from a list index. Each
    object is visited once: YAML aliases may share (or nest) one structure many times."""
    problems: list[str] = []
    seen: set[int] = set()
    todo: list[tuple[Any, tuple[Any, ...]]] = [(data, ())]
    while todo:
        value, loc = todo.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    where = _path(loc) or source
                    problems.append(f"{where}: key {_short(key)} must be text (quote it)")
                else:
                    todo.append((item, (*loc, key)))
        elif isinstance(value, list):
            todo.extend((item, (*loc, index)) for index, item in enumerate(value))
    return sorted(problems)


def _one_line(text: str) -> str:
    return " ".join(text.split())


M = TypeVar("M", bound=BaseModel)


def user_config_problems(model: BaseModel) -> list[str]:
    """What the checks of a user's file say about a model that arrived some other way (an
    `update_spec` payload): the wire models accept anything a past release wrote, a change to
    a running loop must pass what a config file must. Inside a workflow no plugin is loaded,
    so the checks of a kind's `queue:` fields and of a backend's needs are left out there (the
    client that sends a change read it from a file, where they ran)."""
    try:
        type(model).model_validate(model.model_dump(), context={**USER_CONFIG, NO_PLUGINS: True})
    except ValidationError as exc:
        return [_describe(err, type(model)) for err in exc.errors()]
    return []


def _validate(model: type[M], data: dict[str, Any], also: list[str] | None = None) -> M:
    """The model, or every problem at once: validation's and `also` (checks made on the raw
    data that validation would only reach once everything else is right)."""
    problems: list[str] = []
    try:
        result = model.model_validate(data, context=USER_CONFIG)
    except ValidationError as exc:
        problems = [_describe(err, model) for err in exc.errors()]
        if model is DocktorConfig:
            problems += _service_checks_behind(data, exc.errors())
    problems += [line for line in also or [] if line not in problems]
    if problems:
        raise ConfigError(sorted(problems, key=_service_order))
    return result


def _service_order(line: str) -> tuple[int, int]:
    """The file's settings first, then each service's problems in the order of the services."""
    match = re.match(r"services\[(\d+)\]", line)
    return (1, int(match.group(1))) if match else (0, 0)


def _service_checks_behind(data: dict[str, Any], errors: list[Any]) -> list[str]:
    """The checks across a service's fields (a command for `processes`, rules or target, ...)
    that pydantic skips while one of its fields is invalid: run on the service without those
    fields, so they are reported now, not after the next edit. A line that names a field left
    out is dropped: it would speak of a default the file did not set."""
    services = data.get("services")
    invalid: dict[int, set[str]] = {}
    for error in errors:
        loc = error["loc"]
        if len(loc) >= 3 and loc[0] == "services" and isinstance(loc[1], int):
            invalid.setdefault(loc[1], set()).add(str(loc[2]))
    lines: list[str] = []
    for index, fields in invalid.items():
        raw = services[index] if isinstance(services, list) else None
        if not isinstance(raw, dict):
            continue
        rest = {key: value for key, value in raw.items() if key not in fields}
        try:
            ServiceSpec.model_validate(rest, context=USER_CONFIG)
        except ValidationError as exc:
            for error in exc.errors():
                if error["loc"]:
                    continue  # a field's own problem: reported by the first pass, or left out
                line = _describe({**error, "loc": ("services", index)}, DocktorConfig)
                if not fields & set(re.findall(r"[a-z_]+", line)):
                    lines.append(line)
    return lines


def duplicate_names(names: list[Any]) -> list[str]:
    """One line per service name used again, naming both places."""
    seen: dict[Any, int] = {}
    problems = []
    for index, name in enumerate(names):
        if isinstance(name, str) and name in seen:
            problems.append(
                f"services[{index}].name: duplicate service name '{name}' "
                f"(also services[{seen[name]}])"
            )
        elif isinstance(name, str):
            seen[name] = index
    return problems


def _raw_duplicates(data: dict[str, Any]) -> list[str]:
    """Duplicate names in the file as written, so they are reported with every other problem
    (the model's own check runs only once all the rest is valid)."""
    services = data.get("services")
    if not isinstance(services, list):
        return []
    return duplicate_names([s.get("name") if isinstance(s, dict) else None for s in services])


def ignored_settings(model: BaseModel, loc: tuple[Any, ...] = ()) -> list[str]:
    """`path: ignored (why)` for each IGNORED_FIELDS setting the file made, anywhere in it."""
    ignored = model.ignored_here() if isinstance(model, Strict) else {}
    lines = [f"{_path((*loc, name))}: ignored ({why})" for name, why in ignored.items()]
    for name in type(model).model_fields:
        if name not in model.model_fields_set or name in ignored:
            continue
        value = getattr(model, name)
        items = enumerate(value) if isinstance(value, list) else [(None, value)]
        for index, item in items:
            if isinstance(item, BaseModel):
                where = (*loc, name) if index is None else (*loc, name, index)
                lines.extend(ignored_settings(item, where))
    return lines


def _describe(error: Any, model: type[BaseModel]) -> str:
    loc = error["loc"]
    path = _path(loc)
    message = str(error["msg"]).removeprefix("Value error, ").replace("Input should be", "must be")
    kind = error["type"]
    if kind == "extra_forbidden":
        message = "unknown field" + _suggest(loc, model)
    elif kind == "missing":
        message = "required field is missing"
    elif kind == "literal_error":
        message = f"must be one of {error['ctx']['expected']}, not {error['input']!r}"
    elif kind == "string_pattern_mismatch":
        message = (
            f"{_short(error['input'])} is not a valid name: use letters, digits, '-', '_' or "
            "'.', starting with a letter or digit" + _lookalike(error["input"])
        )
    elif kind == "too_short" and loc and loc[-1] == "services":
        message = "must list at least one service"
    elif kind == "finite_number":
        message = f"must be a finite number, not {_short(error['input'])}"
    elif kind.endswith("_type") or kind.endswith("_parsing"):
        message = f"{message}, got {_short(error['input'])}"
    # One problem, one line, whatever a value or a message quoted.
    message = _one_line(message)
    if not path:
        return message
    field = message.split(":", 1)[0]
    if ": " in message and field in ServiceSpec.model_fields:
        # A model-level check on a service that names its own field.
        return f"{path}.{message}"
    return f"{path}: {message}"


def _lookalike(value: Any) -> str:
    """Names a non-ASCII character, which may look exactly like an ASCII one ('а', U+0430)."""
    for char in str(value):
        if not char.isascii():
            return f" (it has the non-ASCII character {char!r}, U+{ord(char):04X})"
    return ""


_PLAIN_KEY_RE = re.compile(r"[A-Za-z0-9_.-]+")
_VALIDATOR_STEP_RE = re.compile(r"function-(after|before|wrap|plain)\[")


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _VALIDATOR_STEP_RE.match(str(part)):
            # pydantic's name for a validator step (`function-after[check(), Spec]`), not a key.
            continue
        elif _PLAIN_KEY_RE.fullmatch(str(part)):
            out += f".{part}" if out else str(part)
        else:
            # A key with spaces, brackets, newlines...: quoted, so the path stays one line and
            # says exactly which key.
            out += f"[{_short(str(part))}]"
    return out


def _suggest(loc: tuple[Any, ...], model: type[BaseModel]) -> str:
    """'(did you mean min_replicas?)' for a typo, by walking the models along the path."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return ""
        current = _inner_model(field.annotation)
        if current is None:
            return ""
    known = list(getattr(current, "model_fields", {}))
    known = [k for k in known if k not in LOADER_FIELDS or current is DocktorConfig]
    if current is QueueSpec:
        known = _queue_fields()
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _queue_fields() -> list[str]:
    """The fields of every installed queue kind's model: a typo in a `queue:` block is
    suggested from them (the error's path does not say which kind it was)."""
    from docktor import sources as metrics

    fields: list[str] = []
    for kind in metrics.queue_kinds():
        model = metrics.source_class(kind).config_model
        fields += [f for f in getattr(model, "model_fields", {}) if f not in fields]
    return fields


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _resolve(
    config: DocktorConfig, base_dir: Path, source: str = DEFAULT_CONFIG_NAME
) -> DocktorConfig:
    """Fill in what depends on where the file lives and on the environment."""
    if config.compose_file and not Path(config.compose_file).is_absolute():
        config.compose_file = str(base_dir / config.compose_file)
    if config.project is None:
        # Compose names a project after the folder of its file; so do we.
        folder = Path(config.compose_file).parent if config.compose_file else base_dir
        config.project = _project_name(folder.name)
        if len(config.project) > MAX_NAME_LENGTH:
            raise ConfigError(
                [
                    f"{source}: project: the folder name {_short(folder.name)} makes a project "
                    f"name longer than {MAX_NAME_LENGTH} characters; set `project:` in the file"
                ]
            )
    state_dir = Path(config.state_dir)
    if not state_dir.is_absolute():
        config.state_dir = str(base_dir / state_dir)
    if config.journal and not Path(config.journal).is_absolute():
        config.journal = str(base_dir / config.journal)
    if address := os.environ.get("TEMPORAL_ADDRESS"):
        config.temporal.address = address
    if namespace := os.environ.get("TEMPORAL_NAMESPACE"):
        config.temporal.namespace = namespace
    for service in config.services:
        service.project = config.project
        service.workdir = str(base_dir)
        service.state_dir = str(Path(config.state_dir) / service.name)
        if service.command:
            service.command = [
                _resolve_arg(arg, base_dir, i) for i, arg in enumerate(service.command)
            ]
    return config


def _resolve_arg(arg: str, base_dir: Path, index: int) -> str:
    looks_like_path = arg.startswith(("./", "../")) or (
        index > 0 and arg.endswith(SCRIPT_SUFFIXES) and not arg.startswith("-")
    )
    if looks_like_path and not Path(arg).is_absolute():
        return str((base_dir / arg).resolve())
    return arg


def _project_name(folder: str) -> str:
    """Compose's normalisation (compose-go's NormalizeProjectName): lower case, only
    [a-z0-9_-], no leading '-' or '_'; so docktor finds the containers Compose labelled."""
    name = re.sub(r"[^a-z0-9_-]", "", folder.lower()).lstrip("-_")
    return name or "default"
