"""The models of docktor.yaml (the multi-service form), in one mode: strict.

Unknown keys are refused (in a file they are typos), and a model knows nothing of the installed
plugins: a `queue:` block is kept as the kind's fields (AnyQueue) and a `backend:` as a name. The
loader (docktor.spec.loader) checks those against what is installed, and checks the limits of a
user's file (docktor.spec.primitives.Limit), with every other problem of the file at once.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializeAsAny,
    ValidationInfo,
    field_validator,
    model_validator,
)

from docktor import names
from docktor.spec.primitives import (
    DURATION_LIMIT,
    NAME_LIMIT,
    PROJECT_LIMIT,
    REPLICAS_LIMIT,
    SERVICE_NAME_PATTERN,
    parse_duration,
)

# ServiceSpec fields the loader fills in; never suggested for a typo.
LOADER_FIELDS = ("project", "workdir", "state_dir")

Operator = Literal[">", ">=", "<", "<=", "==", "!="]
# Any backend an installed package registers (docktor.plugins): processes, compose, swarm, ...
Backend = str

Duration = Annotated[float, BeforeValidator(parse_duration), DURATION_LIMIT]
PositiveDuration = Annotated[Duration, Field(gt=0)]
NonNegativeDuration = Annotated[Duration, Field(ge=0)]
ReplicaCount = Annotated[int, REPLICAS_LIMIT]
ServiceName = Annotated[str, NAME_LIMIT]
ProjectName = Annotated[str, PROJECT_LIMIT]


class Strict(BaseModel):
    """In a user's file, unknown keys are typos: refuse them rather than silently ignore a
    setting."""

    # allow_inf_nan=False: a loop's plan travels as JSON, where NaN and infinity become null,
    # so a file that says `value: .inf` would start a loop whose input no worker can decode.
    model_config = ConfigDict(extra="forbid", frozen=False, allow_inf_nan=False)

    # Fields that still load because older files set them, but that change nothing: field ->
    # why. Setting one in a file gives one warning line (the loader's warnings), not an error.
    IGNORED_FIELDS: ClassVar[dict[str, str]] = {}

    def ignored_here(self) -> dict[str, str]:
        """The IGNORED_FIELDS this model's input set: field -> why."""
        return {
            name: why for name, why in self.IGNORED_FIELDS.items() if name in self.model_fields_set
        }


def inner_model(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds (itself, in a list, or optional), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = inner_model(arg)
        if found is not None:
            return found
    return None


class Condition(Strict):
    """A rule's condition as the file writes it; the policy evaluates it as the plan's
    Condition (docktor.plan), which the loop runs by."""

    metric: str = Field(min_length=1)
    op: Operator
    value: float


class Rules(Strict):
    scale_up_when: list[Condition] = Field(default_factory=list)
    scale_down_when: list[Condition] = Field(default_factory=list)


class Cooldown(Strict):
    """Per-direction quiet time after a scale action. Scaling up must react fast to a burst;
    scaling down waits longer so a short lull does not throw away capacity (as the HPA's
    5-minute scale-down stabilisation does, shortened for queue consumers)."""

    up: NonNegativeDuration = 30.0
    down: NonNegativeDuration = 120.0


# Defaults of the target policy, chosen from `docktor bench control` (benchmarks/README.md).
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
    (docktor.sources.nats.NatsQueueSpec; docs/plugins.md); the loader validates a file's block
    against the model of its kind, found through the kind's entry point."""

    kind: str = "nats"
    metrics: list[str] = Field(default_factory=list)


class AnyQueue(QueueSpec):
    """A `queue:` block as a ServiceSpec holds it: `kind`, `metrics` and every field of the
    kind's own model, kept as they are. The schema loads no plugins, so it cannot know those
    fields; the loader checks them against the kind's model and keeps the block as that model
    wrote it (defaults filled in). The loop's plan carries it on (docktor.plan.QueueBlock), and
    the source reads it as its own model (docktor.sources.queue_block)."""

    model_config = ConfigDict(extra="allow")


def _open_queue(value: Any) -> Any:
    """A mapping becomes an AnyQueue (anything else is left for the field to refuse, as not a
    `queue:` block)."""
    if isinstance(value, dict):
        return AnyQueue.model_validate(value)
    return value


class ServiceSpec(Strict):
    name: ServiceName = Field(min_length=1, pattern=SERVICE_NAME_PATTERN)
    backend: Backend = Field(default="compose", min_length=1)
    min_replicas: ReplicaCount = Field(default=1, ge=0, strict=True)
    max_replicas: ReplicaCount = Field(default=10, ge=1, strict=True)
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
    # Every field of the block kept (AnyQueue): the loader checks them against the kind's model.
    queue: Annotated[SerializeAsAny[QueueSpec] | None, BeforeValidator(_open_queue)] = None
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

    @field_validator("max_replicas")
    @classmethod
    def _max_not_below_min(cls, value: int, info: ValidationInfo) -> int:
        return max_not_below_min(value, info)

    @field_validator("command")
    @classmethod
    def _command_not_empty(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("must name a program to run, e.g. ['python', 'consumer.py']")
        return value

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


class TemporalTLS(Strict):
    """TLS to Temporal, named as in the Temporal CLI's profile file (temporal.toml). Paths are
    relative to the config's folder."""

    # None: TLS is on when anything below (or an API key) is given; false turns it off.
    disabled: bool | None = None
    server_ca_cert_path: str | None = None  # absent: the system's roots
    client_cert_path: str | None = None
    client_key_path: str | None = None
    server_name: str | None = None  # the name the server's certificate must carry (SNI)

    @model_validator(mode="after")
    def _cert_with_key(self) -> TemporalTLS:
        if (self.client_cert_path is None) != (self.client_key_path is None):
            raise ValueError("client_cert_path and client_key_path go together; give both")
        return self


# An environment variable's name: the key itself never belongs in a file.
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class TemporalSpec(Strict):
    """Only the fields a file sets count: the others come from the Temporal CLI's profile
    (docktor.client.temporal layers them), so the defaults here are the last resort."""

    address: str = "127.0.0.1:7233"
    namespace: str = "default"
    task_queue: str = names.TASK_QUEUE
    tls: TemporalTLS | None = None
    # The name of the environment variable that holds an API key (Temporal Cloud), never the key.
    api_key_env: str | None = Field(default=None, pattern=ENV_NAME)


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


VERSION_IGNORED = "there is one format; a file needs no version"


class DocktorConfig(Strict):
    IGNORED_FIELDS: ClassVar[dict[str, str]] = {"version": VERSION_IGNORED}

    version: int = 1
    project: ProjectName | None = None
    compose_file: str | None = None
    state_dir: str = ".docktor"
    journal: str | None = None
    temporal: TemporalSpec = Field(default_factory=TemporalSpec)
    llm: LLMSpec = Field(default_factory=lambda: LLMSpec(provider="none"))
    services: list[ServiceSpec] = Field(min_length=1)
    # One line per setting of the file that loads but changes nothing, or that the loader read
    # another way (an old metric name): docktor.spec.loader fills it in.
    _warnings: list[str] = PrivateAttr(default_factory=list)

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
        return names.workflow_id(self.project, service)

    def legacy_workflow_id(self, service: str) -> str:
        """Where a loop started by an older release runs (docktor/names.py)."""
        return names.legacy_workflow_id(self.project, service)

    @property
    def journal_path(self) -> str:
        return self.journal or str(Path(self.state_dir) / "decisions.jsonl")


def max_not_below_min(value: int, info: ValidationInfo) -> int:
    low = info.data.get("min_replicas")
    if low is not None and value < low:
        raise ValueError(f"must be >= min_replicas ({low})")
    return value


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
