"""Reading a docktor.yaml: where it is, its YAML (errors with the right line), its forms, the
checks of the schema, of the installed plugins and of the limits, all reported at once, and
what depends on where the file lives and on the environment.

Validation is offline: it reads the file alone and never touches the network, Docker, or the
files the config names.
"""

from __future__ import annotations

import os
import re
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from docktor.spec.errors import ConfigError, describe, one_line, path, service_order
from docktor.spec.installed import (
    backend_needs,
    check_backend,
    check_queue,
    ignored_settings,
    rate_default,
)
from docktor.spec.legacy import LegacyConfig, is_legacy
from docktor.spec.limits import limit_problems
from docktor.spec.primitives import MAX_NAME_LENGTH, short
from docktor.spec.schema import DocktorConfig, ServiceSpec, duplicate_names

DEFAULT_CONFIG_NAME = "docktor.yaml"
SCRIPT_SUFFIXES = (".py", ".sh", ".js", ".rb", ".pl")

M = TypeVar("M", bound=BaseModel)


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
    data = _read_yaml(text, source)
    try:
        if is_legacy(data):
            legacy = _validate(LegacyConfig, data)
            config = _validate_config(legacy.to_multi())
            config._warnings = ignored_settings(legacy) + config.warnings
        else:
            config = _validate_config(data)
        return _resolve(config, base_dir, source)
    except RecursionError:
        # A YAML alias can make a structure that contains itself.
        raise ConfigError([f"{source}: a value contains itself (a recursive YAML alias)"]) from None


def _read_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError([one_line(f"{where}: YAML syntax error: {problem}")]) from None
    except RecursionError:
        # PyYAML composes nested blocks recursively; a config is never this deep.
        raise ConfigError([f"{source}: YAML nested too deeply"]) from None
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise ConfigError([f"{source}: must be a mapping of settings, but the file is {kind}"])
    if problems := _non_text_keys(data, source):
        raise ConfigError(problems)
    return data


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
                    where = path(loc) or source
                    problems.append(f"{where}: key {short(key)} must be text (quote it)")
                else:
                    todo.append((item, (*loc, key)))
        elif isinstance(value, list):
            todo.extend((item, (*loc, index)) for index, item in enumerate(value))
    return sorted(problems)


def spec_problems(model: type[BaseModel], data: Any) -> list[str]:
    """What the checks of a user's file say about `data` read as `model` (a ServiceSpec or an
    LLMSpec that arrived some other way, e.g. the change of a running loop): the schema's
    problems, else the limits'. The plugin checks are left out: code that runs inside a
    workflow loads no plugins (the client that sends a change read it from a file, where they
    ran)."""
    try:
        model.model_validate(data)
    except ValidationError as exc:
        return [describe(error, model) for error in exc.errors()]
    return limit_problems(model, data)


def user_config_problems(model: BaseModel) -> list[str]:
    """spec_problems of a model's own data: a model built without the loader (an `update_spec`
    payload) is held to what a config file must pass."""
    return spec_problems(type(model), model.model_dump())


def _validate(model: type[M], data: dict[str, Any], also: list[str] | None = None) -> M:
    """The model, or every problem at once: the schema's, the limits', and `also` (the checks
    made beside the schema)."""
    problems: list[str] = []
    result: M | None = None
    try:
        result = model.model_validate(data)
    except ValidationError as exc:
        problems = [describe(error, model) for error in exc.errors()]
        if model is DocktorConfig:
            problems += _service_checks(data, exc.errors())
    else:
        if isinstance(result, DocktorConfig):
            for index, service in enumerate(result.services):
                problems += backend_needs(service, ("services", index))
    problems += limit_problems(model, data)
    problems += [line for line in also or [] if line not in problems]
    if problems:
        raise ConfigError(sorted(dict.fromkeys(problems), key=service_order))
    assert result is not None
    return result


def _validate_config(data: dict[str, Any]) -> DocktorConfig:
    """A multi-service file: the plugin checks first (they fill in each `queue:` block as its
    kind's model writes it), then the schema and the limits, every problem at once."""
    checked = check_plugins(data)
    config = _validate(DocktorConfig, checked.data, checked.problems + _raw_duplicates(data))
    config._warnings = ignored_settings(config) + checked.warnings
    return config


@dataclass
class PluginCheck:
    """What check_plugins found in a file: its problems, its warnings, and the file's data
    with each valid `queue:` block as its kind's model wrote it."""

    data: dict[str, Any]
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def check_plugins(data: dict[str, Any]) -> PluginCheck:
    """The checks that ask the installed plugins, on a multi-service file's data: each
    `queue:` block against its kind's model and metrics, each `backend:` installed. (What a
    backend needs of a service is asked once the service validates: _validate.)"""
    checked = PluginCheck(data)
    services = data.get("services")
    if not isinstance(services, list):
        return checked
    services = list(services)
    renamed: dict[str, str] = {}
    renamed_at: list[str] = []
    for index, raw in enumerate(services):
        if not isinstance(raw, dict):
            continue
        loc = ("services", index)
        if "backend" in raw:
            checked.problems += check_backend(raw["backend"], (*loc, "backend"))
        if raw.get("queue") is None:
            continue
        queue = check_queue(raw["queue"], (*loc, "queue"))
        checked.problems += queue.problems
        checked.warnings += queue.ignored
        if queue.block is not None:
            services[index] = {**raw, "queue": queue.block}
            if not queue.rate_in:
                rate, problems = rate_default(raw, queue.block["kind"], loc)
                services[index]["rate"] = rate
                checked.problems += problems
        if queue.renamed:
            renamed.update(queue.renamed)
            renamed_at.append(path((*loc, "queue", "metrics")))
    if renamed:
        # One line for the file, however many blocks use the old names.
        read = ", ".join(f"{old} as {new}" for old, new in renamed.items())
        checked.warnings.append(
            f"{', '.join(renamed_at)}: old short metric names, read as the metrics they name "
            f"({read}); write those names"
        )
    checked.data = {**data, "services": services}
    return checked


def _service_checks(data: dict[str, Any], errors: list[Any]) -> list[str]:
    """The checks across a service's fields (a command for `processes`, rules or target, ...)
    that pydantic skips while one of its fields is invalid, and what its backend needs of it:
    run on the service without those fields, so they are reported now, not after the next
    edit. A line that names a field left out is dropped: it would speak of a default the file
    did not set."""
    services = data.get("services")
    if not isinstance(services, list):
        return []
    invalid: dict[int, set[str]] = {}
    for error in errors:
        loc = error["loc"]
        if len(loc) >= 3 and loc[0] == "services" and isinstance(loc[1], int):
            invalid.setdefault(loc[1], set()).add(str(loc[2]))
    lines: list[str] = []
    for index, raw in enumerate(services):
        if not isinstance(raw, dict):
            continue
        fields = invalid.get(index, set())
        rest = {key: value for key, value in raw.items() if key not in fields}
        try:
            service = ServiceSpec.model_validate(rest)
        except ValidationError as exc:
            if not fields:
                continue  # its problems are the first pass's
            found = [
                describe({**error, "loc": ("services", index)}, DocktorConfig)
                for error in exc.errors()
                if not error["loc"]  # a field's own problem: reported already, or left out
            ]
        else:
            found = backend_needs(service, ("services", index))
        lines += [line for line in found if not fields & set(re.findall(r"[a-z_]+", line))]
    return lines


def _raw_duplicates(data: dict[str, Any]) -> list[str]:
    """Duplicate names in the file as written, so they are reported with every other problem
    (the model's own check runs only once all the rest is valid)."""
    services = data.get("services")
    if not isinstance(services, list):
        return []
    return duplicate_names([s.get("name") if isinstance(s, dict) else None for s in services])


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
                    f"{source}: project: the folder name {short(folder.name)} makes a project "
                    f"name longer than {MAX_NAME_LENGTH} characters; set `project:` in the file"
                ]
            )
    state_dir = Path(config.state_dir)
    if not state_dir.is_absolute():
        config.state_dir = str(base_dir / state_dir)
    if config.journal and not Path(config.journal).is_absolute():
        config.journal = str(base_dir / config.journal)
    if tls := config.temporal.tls:
        for field in ("server_ca_cert_path", "client_cert_path", "client_key_path"):
            value = getattr(tls, field)
            if value and not Path(value).expanduser().is_absolute():
                setattr(tls, field, str(base_dir / value))
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
