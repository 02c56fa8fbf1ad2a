"""How the connection's settings are layered: flags, the TEMPORAL_* environment, docktor.yaml's
`temporal:` block, the Temporal CLI's profile file, the defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from docktor.client.temporal import resolve
from docktor.spec import ConfigError, parse_config

SERVICE = {"name": "web", "backend": "processes", "command": ["sleep", "60"]}


def config(tmp_path: Path, temporal: dict[str, object] | None = None):
    document: dict[str, object] = {"project": "p", "services": [SERVICE]}
    if temporal is not None:
        document["temporal"] = temporal
    return parse_config(yaml.safe_dump(document), tmp_path)


def profiles(tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "temporal.toml"
    path.write_text(
        '[profile.prod]\naddress = "prod.example:7233"\nnamespace = "prod"\n'
        'api_key = "from-profile"\n[profile.prod.tls]\nserver_name = "prod.internal"\n'
    )
    return {"TEMPORAL_CONFIG_FILE": str(path), "TEMPORAL_PROFILE": "prod"}


def test_an_old_file_connects_as_before(tmp_path: Path) -> None:
    connection = resolve(config(tmp_path, {"address": "h:7233"}), env={})
    assert (connection.address, connection.namespace, connection.mode) == (
        "h:7233",
        "default",
        "plaintext",
    )
    assert connection.describe() == "h:7233 (plaintext)"
    assert resolve(config(tmp_path), env={}).address == "127.0.0.1:7233"


def test_the_profile_fills_what_the_file_leaves_out(tmp_path: Path) -> None:
    connection = resolve(config(tmp_path), env=profiles(tmp_path))
    assert connection.address == "prod.example:7233" and connection.namespace == "prod"
    assert connection.api_key == "from-profile" and connection.mode == "TLS"
    assert connection.describe() == (
        "prod.example:7233 (TLS, namespace prod, API key from profile prod, profile prod)"
    )
    assert "from-profile" not in repr(connection)


def test_the_file_beats_the_profile_the_environment_beats_the_file_flags_beat_all(
    tmp_path: Path,
) -> None:
    env = profiles(tmp_path) | {"MY_KEY": "from-file-variable"}
    spec = config(
        tmp_path,
        {
            "address": "file.example:7233",
            "api_key_env": "MY_KEY",
            "tls": {"server_ca_cert_path": "ca.pem", "server_name": "file.internal"},
        },
    )
    connection = resolve(spec, env=env)
    assert connection.address == "file.example:7233" and connection.namespace == "prod"
    assert connection.api_key == "from-file-variable" and connection.api_key_from == "MY_KEY"
    assert connection.tls is not None and connection.tls.server_name == "file.internal"
    assert connection.tls.server_root_ca_cert == tmp_path / "ca.pem"  # relative to the file

    env |= {"TEMPORAL_API_KEY": "from-env", "TEMPORAL_TLS_SERVER_NAME": "env.internal"}
    connection = resolve(spec, env=env)
    assert connection.api_key == "from-env" and connection.tls is not None
    assert connection.tls.server_name == "env.internal"
    assert resolve(spec, "flag.example:7233", env=env).address == "flag.example:7233"


def test_client_cert_and_key_go_together(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="client_cert_path and client_key_path go together"):
        config(tmp_path, {"tls": {"client_cert_path": "c.pem"}})


def test_an_unset_key_variable_or_a_missing_profile_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="MY_KEY is not set"):
        resolve(config(tmp_path, {"api_key_env": "MY_KEY"}), env={})
    with pytest.raises(ConfigError, match="Profile 'nope' not found"):
        resolve(config(tmp_path), env=profiles(tmp_path) | {"TEMPORAL_PROFILE": "nope"})
    with pytest.raises(ConfigError, match="api_key_env"):
        config(tmp_path, {"api_key_env": "not a variable name"})
