"""Connecting to Temporal, the way every docktor entry point does it.

One function, `connect`, for the worker, the starter, each `docktor` command, `docktor mcp` and
the bench. Each setting is taken from the first place that gives it:

1. a flag (`--address`);
2. the environment, as the Temporal CLI and SDKs read it (`TEMPORAL_ADDRESS`,
   `TEMPORAL_NAMESPACE`, `TEMPORAL_API_KEY`, `TEMPORAL_TLS_*`, `TEMPORAL_GRPC_META_*`);
3. docktor.yaml's `temporal:` block, the fields the file sets;
4. the profile of the Temporal CLI's file (`TEMPORAL_PROFILE`, default `default`, in
   `TEMPORAL_CONFIG_FILE` or ~/.config/temporalio/temporal.toml);
5. the defaults (127.0.0.1:7233, namespace default, no TLS).

Environment above the file is how docktor always treated TEMPORAL_ADDRESS and how the temporal
CLI treats its own profile file. The loader already puts TEMPORAL_ADDRESS and TEMPORAL_NAMESPACE
into the config's `temporal:` block, so an address a program sets there afterwards (the demo's
embedded server) is the one used. The SDK's `temporalio.envconfig` reads layers 2 and 4, so the
names and formats are the ecosystem's. Uses only temporalio's client side (never
temporalio.workflow), so the domain stays free of the workflow sandbox.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.envconfig import ClientConfigProfile, ClientConfigTLS
from temporalio.service import TLSConfig

from docktor import names
from docktor.loop.messages import AutoscalerInput
from docktor.plan import LLMPlan, ServicePlan
from docktor.spec import ConfigError, DocktorConfig, ServiceSpec
from docktor.text import connect_reason, printable_line

_INDEXED_TYPES = {
    "Keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    "Int": IndexedValueType.INDEXED_VALUE_TYPE_INT,
    "Bool": IndexedValueType.INDEXED_VALUE_TYPE_BOOL,
}
SEARCH_ATTRIBUTE_TYPES = {
    name: _INDEXED_TYPES[kind] for name, kind in names.SEARCH_ATTRIBUTES.items()
}

DEFAULT_PROFILE = "default"
_TLS_FILES = {
    "server_root_ca_cert": "server_ca_cert_path",
    "client_cert": "client_cert_path",
    "client_private_key": "client_key_path",
}


class TemporalUnreachable(Exception):
    pass


@dataclass(frozen=True)
class Connection:
    """Where and how to connect, every layer applied. The API key is never in its repr."""

    address: str
    namespace: str
    tls: ClientConfigTLS | None = None
    api_key: str | None = field(default=None, repr=False)
    api_key_from: str = ""  # where the key came from, to say so without saying the key
    profile: str | None = None  # the profile of the CLI's file, when it set anything
    rpc_metadata: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def tls_on(self) -> bool:
        # As the SDK's envconfig decides: TLS settings turn it on, so does an API key.
        if self.tls is not None:
            return self.tls.disabled is not True
        return self.api_key is not None

    @property
    def mode(self) -> str:
        if not self.tls_on:
            return "plaintext"
        return "mTLS" if self.tls is not None and self.tls.client_cert else "TLS"

    def describe(self) -> str:
        """`127.0.0.1:7233 (mTLS, profile prod)`: what `config validate` and the worker say."""
        parts = [self.mode]
        if self.namespace != "default":
            parts.append(f"namespace {self.namespace}")
        if self.api_key is not None:
            parts.append(f"API key from {self.api_key_from}")
        if self.profile:
            parts.append(f"profile {self.profile}")
        return f"{self.address} ({', '.join(parts)})"

    def connect_kwargs(self) -> dict[str, Any]:
        """Client.connect's arguments; reads the certificate files (ConfigError when one
        cannot be read)."""
        kwargs: dict[str, Any] = {"namespace": self.namespace, "tls": self._tls_config()}
        if self.api_key is not None:
            kwargs["api_key"] = self.api_key
        if self.rpc_metadata:
            kwargs["rpc_metadata"] = dict(self.rpc_metadata)
        return kwargs

    def _tls_config(self) -> bool | TLSConfig:
        if not self.tls_on:
            return False
        if self.tls is None:
            return True
        files: dict[str, bytes | None] = {}
        for attribute, name in _TLS_FILES.items():
            source = getattr(self.tls, attribute)
            try:
                files[attribute] = _read(source)
            except OSError as exc:
                raise ConfigError(
                    [f"temporal.tls.{name}: cannot read {source} ({exc.strerror or exc})"]
                ) from None
        return TLSConfig(domain=self.tls.server_name, **files)


def _read(source: Path | str | bytes | None) -> bytes | None:
    if source is None or isinstance(source, bytes):
        return source
    if isinstance(source, Path):
        return source.expanduser().read_bytes()
    return source.encode()  # the profile file's `data`: the PEM itself


def resolve(
    config: DocktorConfig, address: str | None = None, env: Mapping[str, str] | None = None
) -> Connection:
    """Every layer applied (the module's docstring lists them); reads no certificate yet."""
    env = dict(os.environ if env is None else env)
    profile_name = env.get("TEMPORAL_PROFILE") or None
    try:
        from_file = ClientConfigProfile.load(profile_name, disable_env=True, override_env_vars=env)
        from_env = ClientConfigProfile.load(disable_file=True, override_env_vars=env)
    except Exception as exc:  # the bridge's ConfigError: a missing profile, a broken file
        where = env.get("TEMPORAL_CONFIG_FILE") or "~/.config/temporalio/temporal.toml"
        raise ConfigError([f"temporal profile ({where}): {printable_line(str(exc))}"]) from None
    spec = config.temporal
    given = spec.model_fields_set

    def first(*values: str | None) -> str | None:
        return next((v for v in values if v), None)

    api_key, api_key_from = _api_key(spec.api_key_env, env, from_env, from_file, profile_name)
    file_counts = bool(from_file.to_dict())
    return Connection(
        address=first(
            address,
            spec.address if "address" in given else None,
            from_env.address,
            from_file.address,
            spec.address,
        )
        or spec.address,
        namespace=first(
            spec.namespace if "namespace" in given else None,
            from_env.namespace,
            from_file.namespace,
            spec.namespace,
        )
        or spec.namespace,
        tls=_merge_tls(from_env.tls, _spec_tls(config), from_file.tls),
        api_key=api_key,
        api_key_from=api_key_from,
        profile=(profile_name or DEFAULT_PROFILE) if file_counts else None,
        rpc_metadata={**from_file.grpc_meta, **from_env.grpc_meta},
    )


def _api_key(
    env_name: str | None,
    env: Mapping[str, str],
    from_env: ClientConfigProfile,
    from_file: ClientConfigProfile,
    profile_name: str | None,
) -> tuple[str | None, str]:
    if from_env.api_key:
        return from_env.api_key, "TEMPORAL_API_KEY"
    if env_name:
        key = env.get(env_name)
        if not key:
            raise ConfigError(
                [f"temporal.api_key_env: the environment variable {env_name} is not set"]
            )
        return key, env_name
    if from_file.api_key:
        return from_file.api_key, f"profile {profile_name or DEFAULT_PROFILE}"
    return None, ""


def _spec_tls(config: DocktorConfig) -> ClientConfigTLS | None:
    tls = config.temporal.tls
    if tls is None:
        return None

    def path(value: str | None) -> Path | None:
        return Path(value) if value else None

    return ClientConfigTLS(
        disabled=tls.disabled,
        server_name=tls.server_name,
        server_root_ca_cert=path(tls.server_ca_cert_path),
        client_cert=path(tls.client_cert_path),
        client_private_key=path(tls.client_key_path),
    )


def _merge_tls(*layers: ClientConfigTLS | None) -> ClientConfigTLS | None:
    """Field by field, the first layer that sets it wins."""
    given = [layer for layer in layers if layer is not None]
    if not given:
        return None
    merged = ClientConfigTLS()
    for name in ("disabled", "server_name", *_TLS_FILES):
        value = next((getattr(t, name) for t in given if getattr(t, name) is not None), None)
        merged = replace(merged, **{name: value})
    return merged


async def connect(
    config: DocktorConfig, address: str | None = None, identity: str | None = None
) -> Client:
    """`identity` names the caller in the history of every signal and update it sends (the
    SDK's default is pid@host); `docktor mcp` passes `mcp:<client name>`.

    Raises ConfigError for settings that cannot be used (a missing profile, an unreadable
    certificate, an unset API key variable) and TemporalUnreachable, in one line naming the
    cause, when the server cannot be reached or refuses the connection."""
    connection = resolve(config, address)
    kwargs = connection.connect_kwargs()
    try:
        return await Client.connect(
            connection.address,
            data_converter=pydantic_data_converter,
            identity=identity,
            **kwargs,
        )
    except Exception as exc:  # the SDK raises RuntimeError for every connect failure
        raise TemporalUnreachable(unreachable(connection, exc)) from None


# The core client's words for each TLS failure (rustls, and the server's TLS alerts), and what
# they mean for the person who configured the connection.
_TLS_CAUSES: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(r"NotValidForName\w*\s*\{\s*expected: \w+\(\"?([^\")]+)"),
        "TLS name mismatch: the server's certificate is not valid for {0} "
        "(set temporal.tls.server_name to a name it carries)",
    ),
    (
        re.compile(r"NotValidForName"),
        "TLS name mismatch: the server's certificate is not valid for the name asked "
        "(set temporal.tls.server_name to a name it carries)",
    ),
    (
        re.compile(r"UnknownIssuer|BadSignature"),
        "TLS unknown CA: the server's certificate is not signed by a CA this client trusts "
        "(set temporal.tls.server_ca_cert_path)",
    ),
    (
        re.compile(r"Expired|NotValidYet"),
        "TLS: the server's certificate is expired or not yet valid",
    ),
    (
        re.compile(r"CertificateRequired|HandshakeFailure"),
        "TLS bad client cert: the server requires a client certificate and got none it accepts "
        "(set temporal.tls.client_cert_path and client_key_path)",
    ),
    (
        re.compile(r"UnknownCA|BadCertificate|DecryptError|AccessDenied|CertificateUnknown"),
        "TLS bad client cert: the server refused the client certificate (not signed by a CA "
        "it trusts)",
    ),
    (
        re.compile(r"InconsistentKeys|KeyMismatch"),
        "TLS bad client cert: the client key does not belong to the client certificate",
    ),
    (
        re.compile(r"H2NotNegotiated"),
        "TLS: the server did not offer HTTP/2 (ALPN h2); is this a gRPC endpoint?",
    ),
    (
        re.compile(r"401 Unauthorized|Unauthenticated|PermissionDenied|[Rr]equest unauthorized"),
        "the server refused the credentials (API key missing or wrong)",
    ),
]


# With TLS 1.3 the server checks a client certificate after the client has finished its side of
# the handshake: its alert often arrives, but the first call may instead see the connection
# closed under it.
_CLOSED_AFTER_HANDSHAKE = re.compile(
    r"after connection.*(?:Canceled|connection closed|ConnectionReset|BrokenPipe)", re.S
)


def refusal(exc: BaseException) -> str | None:
    """The TLS or credentials cause of a failed connection, named; None for any other."""
    text = str(exc)
    for pattern, cause in _TLS_CAUSES:
        if match := pattern.search(text):
            return printable_line(cause.format(*match.groups()))
    return None


def unreachable(connection: Connection, exc: BaseException) -> str:
    """Why a connection failed, as one line: the TLS cause named when there is one."""
    target = f"Temporal at {connection.address}"
    if cause := refusal(exc):
        return f"{target} refused the connection: {cause}"
    reason = connect_reason(exc)
    if connection.tls_on and _CLOSED_AFTER_HANDSHAKE.search(str(exc)):
        return (
            f"{target} refused the connection: TLS bad client cert (most likely): the server "
            "closed the connection right after the handshake, as one that requires a client "
            "certificate does when it refuses the one sent, or gets none"
        )
    if not connection.tls_on and re.search(
        r"broken pipe|ConnectionReset|reset by peer", str(exc), re.I
    ):
        return (
            f"cannot talk to {target} ({reason}); does it want TLS? (temporal.tls in the "
            "config, or TEMPORAL_TLS=true)"
        )
    return (
        f"cannot reach {target} ({reason}); "
        "is it running? (`docktor dev` starts one, or set TEMPORAL_ADDRESS)"
    )


async def missing_search_attributes(client: Client) -> list[str]:
    response = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    return [name for name in SEARCH_ATTRIBUTE_TYPES if name not in response.custom_attributes]


async def ensure_search_attributes(client: Client) -> list[str]:
    """Register the Docktor* search attributes that the namespace lacks; returns those added."""
    missing = await missing_search_attributes(client)
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=client.namespace,
                search_attributes={name: SEARCH_ATTRIBUTE_TYPES[name] for name in missing},
            )
        )
    return missing


def autoscaler_input(
    config: DocktorConfig, service: ServiceSpec, search_attributes: bool = True
) -> AutoscalerInput:
    """The workflow's input: the plan built from the service's spec, once, here."""
    return AutoscalerInput(
        project=names.project_name(config.project),
        service=ServicePlan.from_spec(service),
        llm=LLMPlan.from_spec(config.llm),
        journal_path=config.journal_path,
        search_attributes=search_attributes,
    )


def ui_url(
    config: DocktorConfig,
    workflow_id: str | None = None,
    base: str | None = None,
    address: str | None = None,
) -> str:
    """The Web UI link under `base`; without one, where Temporal's dev server puts its UI by
    default: the API's port + 1000 on the API's host (7233 -> 8233)."""
    if base is None:
        host, _, port = (address or config.temporal.address).rpartition(":")
        base = f"http://{host}:{int(port) + 1000}" if port.isdigit() else f"http://{host}:8233"
    url = f"{base.rstrip('/')}/namespaces/{config.temporal.namespace}/workflows"
    return f"{url}/{workflow_id}" if workflow_id else url
