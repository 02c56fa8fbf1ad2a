"""The user's docktor.yaml: its schema, how it is loaded, and how its problems are worded.

values     durations, counts, names: parsing, limits, quoting
schema     the models of the multi-service form (strict, no plugin imports)
legacy     the Go tool's single-service form and its normalisation
errors     ConfigError and the one-line wording of a problem
installed  the checks that ask the installed plugins (queue kinds, metrics, backends)
limits     the limits of a user's file, checked on the data as written
loader     paths, env, YAML, the checks above all at once, resolution
edit       changing a file in place (`docktor config set`)
"""

from docktor.spec.errors import ConfigError
from docktor.spec.legacy import LegacyConfig, LegacyScaling
from docktor.spec.loader import (
    DEFAULT_CONFIG_NAME,
    check_plugins,
    default_config_path,
    load_config,
    parse_config,
    spec_problems,
    user_config_problems,
)
from docktor.spec.primitives import (
    MAX_DURATION_S,
    MAX_NAME_LENGTH,
    MAX_REPLICAS,
    PROJECT_NAME_RE,
    SERVICE_NAME_PATTERN,
    format_number,
    parse_duration,
)
from docktor.spec.schema import (
    DEFAULT_BASE_URLS,
    LOADER_FIELDS,
    PER_REPLICA_SUFFIX,
    Activation,
    AnyQueue,
    Backend,
    Behavior,
    Condition,
    Cooldown,
    Direction,
    DocktorConfig,
    Duration,
    Fallback,
    LLMSpec,
    NonNegativeDuration,
    Operator,
    PositiveDuration,
    Predict,
    QueueSpec,
    RateLimit,
    RateTracking,
    Rules,
    ServiceSpec,
    Strict,
    TemporalSpec,
)

__all__ = [
    "DEFAULT_BASE_URLS",
    "DEFAULT_CONFIG_NAME",
    "LOADER_FIELDS",
    "MAX_DURATION_S",
    "MAX_NAME_LENGTH",
    "MAX_REPLICAS",
    "PER_REPLICA_SUFFIX",
    "PROJECT_NAME_RE",
    "SERVICE_NAME_PATTERN",
    "Activation",
    "AnyQueue",
    "Backend",
    "Behavior",
    "Condition",
    "ConfigError",
    "Cooldown",
    "Direction",
    "DocktorConfig",
    "Duration",
    "Fallback",
    "LLMSpec",
    "LegacyConfig",
    "LegacyScaling",
    "NonNegativeDuration",
    "Operator",
    "PositiveDuration",
    "Predict",
    "QueueSpec",
    "RateLimit",
    "RateTracking",
    "Rules",
    "ServiceSpec",
    "Strict",
    "TemporalSpec",
    "check_plugins",
    "default_config_path",
    "format_number",
    "load_config",
    "parse_config",
    "parse_duration",
    "spec_problems",
    "user_config_problems",
]
