"""Edit the `llm` block of docktor.yaml and nothing else (`docktor config set-model`).

A config file is a document people write comments in, so an edit must not reformat it. ruamel's
round-trip mode keeps comments and layout inside the block it edits, but re-dumping a whole file
may still re-indent or re-wrap other parts of it. So the file is re-dumped only to render the
edited `llm` block; those lines are spliced into the original text in place of the old block, and
every other line of the file stays byte-for-byte as it was.

The result is validated with docktor.spec.parse_config before anything is written, and it is
written atomically (a temporary file in the same folder, then rename), so a failed edit leaves
the file untouched and a reader never sees half a file.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

# DEFAULT_BASE_URLS: the base_url each provider gets when set-model switches provider without
# --base-url and the config still points at the other provider's default (a DMR URL is no use
# for OpenAI).
from docktor.spec import DEFAULT_BASE_URLS, ConfigError, parse_config


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    # Never re-wrap a long line (a URL, a long comment) of the block being rendered.
    yaml.width = 4096
    return yaml


def set_model(
    path: Path,
    model: str,
    provider: str | None = None,
    base_url: str | None = None,
) -> list[str]:
    """Point the config at `model` (and optionally another provider / server); returns one line
    per setting that changed. Raises ConfigError (nothing written) when the result is invalid."""
    try:
        original = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    updated, changes = edit_llm(original, model, provider, base_url, source=str(path))
    # The whole loader runs on the result, so what is written is a file docktor accepts.
    parse_config(updated, base_dir=path.resolve().parent, source=str(path))
    if updated != original:
        write_atomically(path, updated)
    return changes


def edit_llm(
    text: str,
    model: str,
    provider: str | None = None,
    base_url: str | None = None,
    source: str = "docktor.yaml",
) -> tuple[str, list[str]]:
    """The new file text and the changes made, as pure string work (tested without files)."""
    yaml = _yaml()
    try:
        data = yaml.load(text)
    except Exception as exc:  # ruamel's errors carry a mark; the loader below words them well
        parse_config(text, base_dir=Path("."), source=source)
        raise ConfigError([f"{source}: cannot be edited: {exc}"]) from None
    if not isinstance(data, CommentedMap):
        raise ConfigError([f"{source}: must be a mapping of settings"])

    block = data.get("llm")
    existing = block if isinstance(block, CommentedMap) else CommentedMap()
    wanted = _wanted(existing, model, provider, base_url)
    changes = [
        f"llm.{key}: {existing.get(key, '(unset)')} -> {value}"
        for key, value in wanted.items()
        if existing.get(key) != value
    ]
    if not changes:
        return text, []

    if "llm" not in data:
        return _append_block(text, wanted), changes

    if isinstance(block, CommentedMap):
        for key, value in wanted.items():
            _set(block, key, value)
    else:
        # `llm:` with nothing (null) or a scalar: a fresh mapping in its place.
        data["llm"] = CommentedMap(wanted)
    return _splice(text, data, yaml), changes


def _wanted(
    existing: CommentedMap, model: str, provider: str | None, base_url: str | None
) -> dict[str, Any]:
    wanted: dict[str, Any] = {}
    current_provider = existing.get("provider", "dmr" if existing else "none")
    new_provider = provider or current_provider
    if new_provider == "none":
        # Choosing a model means wanting advice: an explicit --provider none is the only way
        # to keep rules only, and then the model is just remembered.
        new_provider = provider or "dmr"
    if new_provider != current_provider:
        wanted["provider"] = new_provider
    if base_url is not None:
        wanted["base_url"] = base_url
    elif new_provider in DEFAULT_BASE_URLS:
        current_url = existing.get("base_url")
        others = {u for p, u in DEFAULT_BASE_URLS.items() if p != new_provider}
        if (current_url is None and new_provider != "dmr") or current_url in others:
            wanted["base_url"] = DEFAULT_BASE_URLS[new_provider]
    wanted["model"] = model
    return wanted


def _set(block: CommentedMap, key: str, value: Any) -> None:
    """Set a key; a new key goes last, and takes over the comment lines that followed the old
    last key, so they stay below the block instead of ending up between two of its keys."""
    if key in block or not block:
        block[key] = value
        return
    last = list(block)[-1]
    block[key] = value
    comments = block.ca.items.get(last)
    if comments and len(comments) > 2 and comments[2] is not None:
        # [2] is the comment after the value: an inline comment plus the lines below it.
        # The inline part stays with `last`; the lines below move to the new last key.
        token = comments[2]
        inline, newline, below = token.value.partition("\n")
        if below:
            token.value = inline + newline
            block.ca.items[key] = [None, None, type(token)(newline + below, token.start_mark), None]


def _splice(original: str, data: CommentedMap, yaml: YAML) -> str:
    """Replace the original lines of the top-level `llm` entry with its re-rendered lines."""
    old_lines = original.splitlines(keepends=True)
    old_start, old_end = _entry_lines(data, "llm", old_lines)
    block = data["llm"]
    if isinstance(block, CommentedMap) and block and block.fa.flow_style() is False:
        # Keep the block's own indent (ruamel's default is 2, the file may use 4).
        first = next(iter(block))
        indent = block.lc.key(first)[1] - data.lc.key("llm")[1]
        if indent > 0:
            yaml.indent(mapping=indent, sequence=indent + 2, offset=indent)
    rendered = io.StringIO()
    yaml.dump(data, rendered)
    new_text = rendered.getvalue()
    new_data = _yaml().load(new_text)
    new_lines = new_text.splitlines(keepends=True)
    new_start, new_end = _entry_lines(new_data, "llm", new_lines)

    replacement = new_lines[new_start:new_end]
    if old_end >= len(old_lines) and old_lines and not old_lines[-1].endswith("\n"):
        # The original ended without a newline inside the llm block: keep it that way.
        replacement[-1] = replacement[-1].rstrip("\n")
    return "".join(old_lines[:old_start] + replacement + old_lines[old_end:])


def _entry_lines(data: CommentedMap, key: str, lines: list[str]) -> tuple[int, int]:
    """[start, end) line numbers of a top-level entry: from its key to its last line of
    content. Comment and blank lines between it and the next top-level key are left out: they
    may well introduce the next key, and they are never changed here."""
    keys = list(data)
    start = data.lc.key(key)[0]
    index = keys.index(key)
    end = data.lc.key(keys[index + 1])[0] if index + 1 < len(keys) else len(lines)
    while end - 1 > start and _filler(lines[end - 1]):
        end -= 1
    return start, end


def _filler(line: str) -> bool:
    stripped = line.strip()
    return not stripped or stripped.startswith("#")


def _append_block(text: str, wanted: dict[str, Any]) -> str:
    """A file without an `llm` key gets one at the end, where it disturbs no comment."""
    buffer = io.StringIO()
    _yaml().dump({"llm": dict(wanted)}, buffer)
    prefix = text if not text or text.endswith("\n") else text + "\n"
    return prefix + buffer.getvalue()


def write_atomically(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, then rename it over `path` (atomic on POSIX);
    the file keeps its permissions."""
    mode = path.stat().st_mode & 0o7777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
