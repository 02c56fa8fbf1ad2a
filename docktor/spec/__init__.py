"""The user's docktor.yaml: its schema, how it is loaded, and how its problems are worded."""

from docktor.spec.schema import *  # noqa: F403
from docktor.spec.schema import (  # noqa: F401 - names tests and tools use
    LOADER_FIELDS,
    MAX_DURATION_S,
    MAX_NAME_LENGTH,
    MAX_REPLICAS,
    PER_REPLICA_SUFFIX,
    PROJECT_NAME_RE,
    SERVICE_NAME_PATTERN,
)
