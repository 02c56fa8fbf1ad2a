"""A load scenario: the queue's service parameters and its arrival rate over time.

A scenario file is YAML, validated strictly like docktor.yaml (unknown keys refused, field
paths in errors). The load is either inline points or a CSV trace, optionally multiplied by
seeded noise, and is sampled once per simulation step by `Scenario.rates`.
"""

from __future__ import annotations

import csv
import math
import random
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)

from docktor.spec import ConfigError, parse_duration

Seconds = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
NonNegativeSeconds = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Noise(Strict):
    """Multiplicative noise, one draw per second: rate x (1 + amplitude x U(-1, 1))."""

    amplitude: float = Field(ge=0, le=1)
    seed: int = 0


class Scenario(Strict):
    name: str = Field(min_length=1)
    description: str = ""
    duration: Seconds
    per_replica_rate: float = Field(gt=0)
    startup: NonNegativeSeconds
    initial_replicas: int = Field(ge=0, strict=True)
    min_replicas: int = Field(ge=0, strict=True)
    max_replicas: int = Field(ge=1, strict=True)
    # Used for docktor's default policy only; the reference policies keep their own.
    check_interval: Seconds | None = None
    points: list[tuple[float, float]] | None = None
    shape: Literal["step", "linear"] = "step"
    repeat_every: Seconds | None = None
    trace: str | None = None
    noise: Noise | None = None
    # Filled in by load_scenario: the trace's per-second rates, read once.
    _trace_rates: list[float] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas: must be >= min_replicas ({self.min_replicas})")
        if not self.min_replicas <= self.initial_replicas <= self.max_replicas:
            raise ValueError(
                f"initial_replicas: must be within [{self.min_replicas}, {self.max_replicas}]"
            )
        if (self.points is None) == (self.trace is None):
            raise ValueError("points: give the load as either `points` or `trace`, not both")
        if self.points is not None:
            _check_points(self.points)
        if self.trace is not None and self.repeat_every is not None:
            raise ValueError("repeat_every: only applies to `points`")
        return self

    def base_rate(self, t: float) -> float:
        """The scheduled rate at time t, before noise."""
        if self.trace is not None:
            rates = self._trace_rates
            return rates[min(int(t), len(rates) - 1)]
        assert self.points is not None
        if self.repeat_every:
            t = t % self.repeat_every
        return _interpolate(self.points, t, self.shape)

    def base_rates(self, dt: float) -> list[float]:
        """The scheduled rate of every simulation step of length dt, without noise."""
        return [self.base_rate(k * dt) for k in range(round(self.duration / dt))]

    def rates(self, dt: float) -> list[float]:
        """The arrival rate of every simulation step of length dt (noise included)."""
        steps = round(self.duration / dt)
        factors = self._noise_factors()
        out = []
        for k in range(steps):
            t = k * dt
            factor = factors[int(t)] if factors else 1.0
            out.append(max(0.0, self.base_rate(t) * factor))
        return out

    def _noise_factors(self) -> list[float]:
        if self.noise is None or self.noise.amplitude == 0:
            return []
        # A generator of its own, seeded: the same file gives the same load on every run.
        draw = random.Random(self.noise.seed)
        seconds = math.ceil(self.duration) + 1
        return [1.0 + self.noise.amplitude * draw.uniform(-1.0, 1.0) for _ in range(seconds)]


def _check_points(points: list[tuple[float, float]]) -> None:
    if not points:
        raise ValueError("points: must list at least one [t, msg_per_s] pair")
    if points[0][0] != 0:
        raise ValueError("points[0]: the first point must be at t = 0")
    for index, (t, rate) in enumerate(points):
        if rate < 0 or not math.isfinite(rate):
            raise ValueError(f"points[{index}]: rate must be a finite number >= 0, not {rate}")
        if index and t <= points[index - 1][0]:
            raise ValueError(
                f"points[{index}]: times must increase ({t} after {points[index - 1][0]})"
            )


def _interpolate(points: list[tuple[float, float]], t: float, shape: str) -> float:
    """step: the last point at or before t holds; linear: straight lines between points. After
    the last point its rate holds either way."""
    previous = points[0]
    for point in points[1:]:
        if point[0] > t:
            if shape == "step":
                return previous[1]
            span = point[0] - previous[0]
            return previous[1] + (point[1] - previous[1]) * (t - previous[0]) / span
        previous = point
    return previous[1]


# ---- loading ---------------------------------------------------------------------------------


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file; a bad one raises ConfigError with one line."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{source}: no such file"]) from None
    except OSError as exc:
        raise ConfigError([f"{source}: cannot read ({exc.strerror})"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else str(source)
        raise ConfigError([f"{where}: YAML syntax error: {getattr(exc, 'problem', exc)}"]) from None
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: must be a mapping of settings"])
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        # One line, however many problems: the first names its field, the count says the rest.
        problems = [_describe(err) for err in exc.errors()]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConfigError([f"{source}: {problems[0]}{more}"]) from None
    if scenario.trace is not None:
        trace = Path(scenario.trace)
        if not trace.is_absolute():
            trace = source.resolve().parent / trace
        scenario._trace_rates = load_trace(trace, scenario.duration)
    return scenario


def load_trace(path: Path, duration: float) -> list[float]:
    """A CSV of `t,rate` rows, one per second from t = 0 (a header row is allowed)."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except OSError as exc:
        raise ConfigError([f"trace: cannot read {path} ({exc.strerror})"]) from None
    if rows and rows[0] and not _is_number(rows[0][0]):
        rows = rows[1:]
    rates: list[float] = []
    for line, row in enumerate(rows, start=1):
        if not row:
            continue
        if len(row) != 2 or not all(_is_number(cell) for cell in row):
            raise ConfigError([f"trace: {path.name} row {line}: expected `t,rate`, got {row}"])
        t, rate = float(row[0]), float(row[1])
        if t != len(rates):
            raise ConfigError(
                [f"trace: {path.name} row {line}: expected t = {len(rates)} (one row per second)"]
            )
        if rate < 0:
            raise ConfigError([f"trace: {path.name} row {line}: rate must be >= 0"])
        rates.append(rate)
    if len(rates) < math.ceil(duration):
        raise ConfigError(
            [f"trace: {path.name} covers {len(rates)} s, shorter than duration ({duration:g} s)"]
        )
    return rates


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _describe(error: Any) -> str:
    path = ""
    for part in error["loc"]:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    message = str(error["msg"]).removeprefix("Value error, ").replace("Input should be", "must be")
    if error["type"] == "extra_forbidden":
        message = "unknown field"
    elif error["type"] == "missing":
        message = "required field is missing"
    if not path:
        # A model-level check names its own field ("points: ...").
        return message
    return f"{path}: {message}"
