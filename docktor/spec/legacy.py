"""The Go tool's single-service form (`service` + `scaling`), and its normalisation into the
multi-service form, so that nothing past the loader knows it existed."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, ValidationInfo, field_validator

from docktor.spec.primitives import SERVICE_NAME_PATTERN, format_number
from docktor.spec.schema import (
    VERSION_IGNORED,
    LLMSpec,
    PositiveDuration,
    ProjectName,
    ReplicaCount,
    ServiceName,
    Strict,
    TemporalSpec,
    max_not_below_min,
)


def is_legacy(data: dict[str, Any]) -> bool:
    """A file in this form: no `services:`, and the form's own keys."""
    return "services" not in data and ("service" in data or "scaling" in data)


class LegacyScaling(Strict):
    cpu_high: float = 80.0
    cpu_low: float = 20.0
    min_replicas: ReplicaCount = Field(default=1, ge=0)
    max_replicas: ReplicaCount = Field(default=10, ge=1)
    scale_up_by: int = Field(default=2, ge=1)
    scale_down_by: int = Field(default=1, ge=1)
    check_interval: PositiveDuration = 10.0
    metrics_window: PositiveDuration = 10.0

    @field_validator("max_replicas")
    @classmethod
    def _max_not_below_min(cls, value: int, info: ValidationInfo) -> int:
        return max_not_below_min(value, info)

    @field_validator("cpu_low")
    @classmethod
    def _low_below_high(cls, value: float, info: ValidationInfo) -> float:
        high = info.data.get("cpu_high")
        if high is not None and value >= high:
            raise ValueError(f"must be < cpu_high ({format_number(high)})")
        return value


class LegacyConfig(Strict):
    IGNORED_FIELDS: ClassVar[dict[str, str]] = {"version": VERSION_IGNORED}

    version: int | str | None = None
    # The same rule as a service's name, so a bad one is reported at `service`, where the
    # file has it, not at the services[0].name it becomes.
    service: ServiceName = Field(min_length=1, pattern=SERVICE_NAME_PATTERN)
    compose_file: str | None = None
    project: ProjectName | None = None
    scaling: LegacyScaling = Field(default_factory=LegacyScaling)
    llm: LLMSpec = Field(default_factory=lambda: LLMSpec(provider="none"))
    temporal: TemporalSpec = Field(default_factory=TemporalSpec)

    def to_multi(self) -> dict[str, Any]:
        s = self.scaling
        return {
            "project": self.project,
            "compose_file": self.compose_file,
            "llm": self.llm.model_dump(),
            "temporal": self.temporal.model_dump(exclude_unset=True),
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
