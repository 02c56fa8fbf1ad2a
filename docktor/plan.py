"""What a running loop acts on: a plan built once from a service's spec.

The user's file is validated strictly by docktor.spec; what travels in the workflow's input,
every activity's input and the `update_spec` update is this plan instead. It is a wire model:
unknown fields are dropped, every field has a default, and no check of a user's file runs when
it is decoded, because a loop started by one release is continued by the next (and, during a
deploy, its payloads are read by workers of both). Renaming a user setting therefore changes
`from_spec`, not the loop's history.

Two ways in, and only two:
- `ServicePlan.from_spec(spec)` / `LLMPlan.from_spec(llm)`: the conversion, at start and at
  `update_spec`, from a spec the loader validated.
- decoding a payload: `_from_older_payloads` is the one place that reads what older releases
  wrote (payloads before the plan were dumps of the spec model, with the same field names, some
  of them missing) and fills in what such a payload meant.

What the loop can run is checked by `problems()` (an update is refused on it); the plan holds
no secret (an API key is read from the worker's environment by the activity that needs it).
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from docktor.spec import (
    DEFAULT_BASE_URLS,
    MAX_DURATION_S,
    MAX_NAME_LENGTH,
    MAX_REPLICAS,
    PER_REPLICA_SUFFIX,
    SERVICE_NAME_PATTERN,
    format_number,
)

if TYPE_CHECKING:
    from docktor.spec import LLMSpec, ServiceSpec

__all__ = [
    "PLAN_VERSION",
    "Activation",
    "Behavior",
    "Condition",
    "Cooldown",
    "Direction",
    "Fallback",
    "LLMPlan",
    "Predict",
    "QueueBlock",
    "RateLimit",
    "RateTracking",
    "Rules",
    "ServicePlan",
    "MAX_DURATION_S",
    "MAX_REPLICAS",
    "PER_REPLICA_SUFFIX",
    "format_number",
]

# The shape of the plan this release writes. A release that changes a field's meaning or shape
# raises it and teaches _from_older_payloads to read the versions before.
PLAN_VERSION = 1

Operator = Literal[">", ">=", "<", "<=", "==", "!="]

# What a payload written before a field existed meant, for the fields whose default depended on
# the policy. These are history, not the user's defaults: they must not follow a later change of
# docktor.spec's defaults, or a running loop would change behaviour on a worker upgrade.
_STEP_CHECK_INTERVAL = 15.0
_TARGET_CHECK_INTERVAL = 4.0
_STEP_COOLDOWN = {"up": 30.0, "down": 120.0}
_TARGET_COOLDOWN = {"up": 0.0, "down": 0.0}
_STEP_BEHAVIOR = {"down": {"window": 0.0}}
_QUEUE_TARGET = {"queue.backlog_per_replica": 100.0}


class Wire(BaseModel):
    """A model that travels in payloads: tolerant of what another release wrote."""

    # allow_inf_nan=False: JSON has no NaN or infinity (they would come back as null), so a
    # plan holding one could not be decoded by the worker it is sent to.
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class Condition(Wire):
    metric: str
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


class Rules(Wire):
    scale_up_when: list[Condition] = Field(default_factory=list)
    scale_down_when: list[Condition] = Field(default_factory=list)


class Cooldown(Wire):
    up: float = 30.0
    down: float = 120.0


class RateLimit(Wire):
    """At most `replicas` or `percent` % per `period` (None and None: no limit)."""

    replicas: int | None = None
    percent: float | None = None
    period: float = 15.0


class Direction(Wire):
    window: float = 0.0
    limit: RateLimit = Field(default_factory=RateLimit)


class Behavior(Wire):
    up: Direction = Field(default_factory=Direction)
    down: Direction = Field(default_factory=lambda: Direction(window=90.0))


class RateTracking(Wire):
    enabled: bool = True
    per_replica: float | None = None
    headroom: float = 0.0
    drain_within: float = 10.0
    smoothing: float = 0.5


class Predict(Wire):
    enabled: bool = False
    lead: float | None = None
    startup: float = 5.0
    min_confidence: float = 0.8
    min_cycles: int = 3
    headroom: float = 0.1
    down_window: float = 0.0

    def lead_for(self, check_interval: float) -> float:
        """How far ahead the forecast looks: `lead`, else one check interval plus `startup`."""
        return self.lead if self.lead is not None else check_interval + self.startup


class Activation(Wire):
    threshold: float = 0.0
    idle_for: float = 300.0


class Fallback(Wire):
    after: int = 3
    replicas: int = 0


class QueueBlock(Wire):
    """The `queue:` block with every field kept, whatever its kind: the worker's metric source
    reads its own fields from it (docktor.sources.queue_block). The workflow loads no plugins,
    so it cannot know them."""

    model_config = ConfigDict(extra="allow")

    kind: str = "nats"
    metrics: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _of_any_kind(cls, data: Any) -> Any:
        # A kind's own model (docktor.sources.nats.NatsQueueSpec, a plugin's): its fields.
        if isinstance(data, BaseModel) and not isinstance(data, QueueBlock):
            return data.model_dump()
        return data


class ServicePlan(Wire):
    """One service as its loop runs it: the resolved spec's settings, under the same names."""

    version: int = PLAN_VERSION
    name: str
    backend: str = "compose"
    min_replicas: int = 1
    max_replicas: int = 10
    check_interval: float = _STEP_CHECK_INTERVAL
    # Filled in (check_interval) when a payload has none; None only in a plan built by hand.
    metrics_window: float | None = None
    scale_up_by: int = 1
    scale_down_by: int = 1
    cooldown: Cooldown = Field(default_factory=Cooldown)
    policy: Literal["step", "target"] = "step"
    rules: Rules = Field(default_factory=Rules)
    target: dict[str, float] = Field(default_factory=dict)
    tolerance: float = 0.1
    rate: RateTracking = Field(default_factory=RateTracking)
    behavior: Behavior = Field(default_factory=Behavior)
    activation: Activation = Field(default_factory=Activation)
    predict: Predict = Field(default_factory=Predict)
    fallback: Fallback | None = None
    queue: QueueBlock | None = None
    command: list[str] | None = None
    env: dict[str, str] = Field(default_factory=dict)
    stop_grace_period: float = 10.0
    # Whether the user's file set stop_grace_period: the compose backend otherwise keeps each
    # container's own stop timeout. True in payloads from before it was carried, as the
    # workers that read them then behaved.
    stop_grace_period_set: bool = True
    approval: Literal["auto", "manual"] = "auto"
    approval_timeout: float = 600.0
    project: str | None = None
    workdir: str | None = None
    state_dir: str | None = None

    @classmethod
    def from_spec(cls, spec: ServiceSpec) -> ServicePlan:
        """The plan of a spec the loader resolved (docktor.spec.load_config)."""
        data = spec.model_dump()
        data["version"] = PLAN_VERSION
        data["stop_grace_period_set"] = "stop_grace_period" in spec.model_fields_set
        return cls.model_validate(data)

    @model_validator(mode="before")
    @classmethod
    def _from_older_payloads(cls, data: Any) -> Any:
        """Fill in what a payload of an older release meant by the fields it lacks.

        Before the plan, payloads were dumps of the resolved spec: the same names, each release
        adding fields. Those whose meaning depended on the policy are resolved as that
        release's spec model resolved them; the others take their defaults. A payload of this
        version has every field, and passes through unchanged.
        """
        if not isinstance(data, dict):
            return data
        data = dict(data)
        rules = data.get("rules")
        if isinstance(rules, BaseModel):  # built in code, with the models
            rules = rules.model_dump()
        has_rules = isinstance(rules, dict) and bool(
            rules.get("scale_up_when") or rules.get("scale_down_when")
        )
        if data.get("policy") is None:
            target_wanted = bool(data.get("target") or data.get("queue"))
            data["policy"] = "step" if has_rules or not target_wanted else "target"
        target_policy = data["policy"] == "target"
        if target_policy and not data.get("target") and data.get("queue") is not None:
            data["target"] = dict(_QUEUE_TARGET)
        if "check_interval" not in data:
            data["check_interval"] = (
                _TARGET_CHECK_INTERVAL if target_policy else _STEP_CHECK_INTERVAL
            )
        if "cooldown" not in data:
            data["cooldown"] = dict(_TARGET_COOLDOWN if target_policy else _STEP_COOLDOWN)
        if "behavior" not in data and not target_policy:
            data["behavior"] = _STEP_BEHAVIOR
        if data.get("metrics_window") is None:
            data["metrics_window"] = data["check_interval"]
        return data

    # ---- what the policy derives from it -------------------------------------------------

    @property
    def window(self) -> float:
        """Seconds the metrics are averaged over: `metrics_window`, else one check interval."""
        return self.metrics_window or self.check_interval

    def metric_names(self) -> set[str]:
        """Every metric the policy reads for this service."""
        rules = self.rules.scale_up_when + self.rules.scale_down_when
        names = {c.metric for c in rules}
        if self.policy == "target":
            names |= {m.removesuffix(PER_REPLICA_SUFFIX) for m in self.target}
            if self.queue is not None and self.rate.enabled:
                # The feed-forward reads these; `explain` shows what the policy looked at.
                names |= {"queue.backlog", "queue.rate_in", "queue.rate_out"}
        return names

    def lead_s(self) -> float:
        """How far ahead predictive pre-scaling looks."""
        return self.predict.lead_for(self.check_interval)

    # ---- what a loop can run --------------------------------------------------------------

    def problems(self) -> list[str]:
        """Why a loop cannot run this plan, one line per problem (`field: why`); empty when it
        can. Not the checks of a user's file (those are docktor.spec's): only what would fail
        the loop or its arithmetic - a timer no clock can hold, a count beyond int32, a
        division by zero, bounds the wrong way round."""
        found = _Problems()
        found.version(self.version)
        if not self.name or not re.match(SERVICE_NAME_PATTERN, self.name):
            found.add("name", f"{self.name!r} is not a service name")
        elif len(self.name) > MAX_NAME_LENGTH:
            found.add("name", f"is longer than {MAX_NAME_LENGTH} characters")
        if not self.backend:
            found.add("backend", "must name a backend")
        found.count("min_replicas", self.min_replicas, 0)
        found.count("max_replicas", self.max_replicas, 1)
        if self.min_replicas > self.max_replicas:
            found.add("max_replicas", f"must be >= min_replicas ({self.min_replicas})")
        found.count("scale_up_by", self.scale_up_by, 1)
        found.count("scale_down_by", self.scale_down_by, 1)
        found.duration("check_interval", self.check_interval, positive=True)
        found.duration("metrics_window", self.metrics_window, positive=True)
        found.duration("cooldown.up", self.cooldown.up)
        found.duration("cooldown.down", self.cooldown.down)
        for side, direction in (("up", self.behavior.up), ("down", self.behavior.down)):
            where = f"behavior.{side}"
            found.duration(f"{where}.window", direction.window)
            found.duration(f"{where}.limit.period", direction.limit.period, positive=True)
            if direction.limit.replicas is not None:
                found.count(f"{where}.limit.replicas", direction.limit.replicas, 1)
            if direction.limit.percent is not None:
                found.number(f"{where}.limit.percent", direction.limit.percent, above=0)
        for metric, wanted in self.target.items():
            found.number(f"target.{metric}", wanted, above=0)
        found.number("tolerance", self.tolerance, at_least=0, below=1)
        if self.rate.per_replica is not None:
            found.number("rate.per_replica", self.rate.per_replica, above=0)
        found.number("rate.headroom", self.rate.headroom, at_least=0, at_most=10)
        found.duration("rate.drain_within", self.rate.drain_within, positive=True)
        found.number("rate.smoothing", self.rate.smoothing, above=0, at_most=1)
        found.duration("predict.lead", self.predict.lead, positive=True)
        found.duration("predict.startup", self.predict.startup)
        found.duration("predict.down_window", self.predict.down_window)
        found.number("predict.min_confidence", self.predict.min_confidence, above=0, at_most=1)
        found.number("predict.min_cycles", self.predict.min_cycles, at_least=2, at_most=10)
        found.number("predict.headroom", self.predict.headroom, at_least=0, at_most=10)
        if self.predict.enabled and (self.queue is None or not self.rate.enabled):
            found.add("predict", "needs a queue with rate tracking")
        found.number("activation.threshold", self.activation.threshold, at_least=0)
        found.duration("activation.idle_for", self.activation.idle_for)
        if self.fallback is not None:
            found.count("fallback.after", self.fallback.after, 1)
            found.count("fallback.replicas", self.fallback.replicas, 0)
        if self.policy == "target" and not self.target and not (self.queue and self.rate.enabled):
            found.add("target", "required for policy target without a queue")
        for index, condition in enumerate(self.rules.scale_up_when + self.rules.scale_down_when):
            if not condition.metric:
                found.add(f"rules[{index}].metric", "must name a metric")
        if self.command is not None and not self.command:
            found.add("command", "must name a program to run")
        found.duration("stop_grace_period", self.stop_grace_period)
        found.duration("approval_timeout", self.approval_timeout, positive=True)
        return found.lines


class LLMPlan(Wire):
    """The model a loop consults, if any. Never an API key: the advise activity reads it from
    the worker's environment."""

    version: int = PLAN_VERSION
    provider: Literal["none", "dmr", "openai"] = "dmr"
    # Empty: the provider's own (filled in as the plan is decoded).
    base_url: str = ""
    model: str = "ai/granite-4.0-h-micro"
    mode: Literal["advise", "explain"] = "advise"
    timeout_s: float = 10.0
    max_step: int = 2
    required: bool = False

    @classmethod
    def from_spec(cls, llm: LLMSpec) -> LLMPlan:
        data = llm.model_dump()
        data["version"] = PLAN_VERSION
        return cls.model_validate(data)

    @classmethod
    def none(cls) -> LLMPlan:
        """No model: the rules decide alone."""
        return cls(provider="none")

    @model_validator(mode="before")
    @classmethod
    def _from_older_payloads(cls, data: Any) -> Any:
        # Every release filled base_url in from the provider; a plan built by hand may not.
        if isinstance(data, dict) and not data.get("base_url"):
            provider = data.get("provider", "dmr")
            return {**data, "base_url": DEFAULT_BASE_URLS.get(provider, "")}
        return data

    def problems(self) -> list[str]:
        found = _Problems()
        found.version(self.version)
        found.duration("timeout_s", self.timeout_s, positive=True)
        found.count("max_step", self.max_step, 1)
        return found.lines


class _Problems:
    """The lines of ServicePlan.problems / LLMPlan.problems, each worded once."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, field: str, why: str) -> None:
        self.lines.append(f"{field}: {why}")

    def version(self, version: int) -> None:
        """A plan written by a newer release may mean something this one would misread: a
        client ahead of the workers waits for them."""
        if version > PLAN_VERSION:
            newer = f"{version} is newer than this worker's ({PLAN_VERSION})"
            self.add("version", f"{newer}; upgrade the workers first")

    def duration(self, field: str, seconds: float | None, positive: bool = False) -> None:
        """A duration becomes a durable timer or a timedelta in the workflow: one beyond what
        they can hold fails every workflow task instead of being refused."""
        if seconds is None:
            return
        if not math.isfinite(seconds) or seconds < 0 or (positive and seconds == 0):
            least = "more than 0" if positive else "0 or more"
            self.add(field, f"must be a duration of {least} seconds, not {seconds:g}")
        elif seconds > MAX_DURATION_S:
            self.add(field, f"must be at most 366 days ({MAX_DURATION_S:.0f}s), not {seconds:g}s")

    def count(self, field: str, value: int, least: int) -> None:
        """A replica count (or a number of steps) is an int32 for the backends and the Int
        search attribute."""
        if value < least:
            self.add(field, f"must be at least {least}, not {value}")
        elif value > MAX_REPLICAS:
            self.add(field, f"must be at most {MAX_REPLICAS}, not {value}")

    def number(
        self,
        field: str,
        value: float,
        above: float | None = None,
        at_least: float | None = None,
        below: float | None = None,
        at_most: float | None = None,
    ) -> None:
        if not math.isfinite(value):
            self.add(field, f"must be a finite number, not {value}")
        elif above is not None and not value > above:
            self.add(field, f"must be more than {format_number(above)}, not {value:g}")
        elif at_least is not None and not value >= at_least:
            self.add(field, f"must be at least {format_number(at_least)}, not {value:g}")
        elif below is not None and not value < below:
            self.add(field, f"must be less than {format_number(below)}, not {value:g}")
        elif at_most is not None and not value <= at_most:
            self.add(field, f"must be at most {format_number(at_most)}, not {value:g}")
