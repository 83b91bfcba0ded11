"""Configuration from the environment (and an optional `.env` file)."""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from pydantic import PositiveFloat, PositiveInt, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_FILE = ".env"


class _Environment(BaseSettings):
    """The ``PLEDGEQL_*`` variables, from the environment or a ``.env`` file
    (the environment wins), parsed and checked; ``Settings.from_env`` turns
    them into the settings the application holds. An empty variable counts
    as unset."""

    model_config = SettingsConfigDict(
        env_prefix="PLEDGEQL_",
        env_file=ENV_FILE,
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",
        case_sensitive=False,
        hide_input_in_errors=True,
    )

    env: Literal["development", "production", "test"] = "development"
    data_dir: Path = Path(".pledgeql")
    database_url: str | None = None
    app_database_url: str | None = None
    jwt_secret: SecretStr | None = None
    jwt_public_key_file: str | None = None
    jwks_file: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    trusted_proxy_header: str | None = None
    cors_origins: str = ""
    cors_extra_headers: str = ""
    graphiql_token: SecretStr | None = None
    audit_key: SecretStr | None = None
    # Limits and sizes: each at least 1 (0 or less would refuse every request or none).
    max_depth: PositiveInt = 12
    max_aliases: PositiveInt = 30
    max_tokens: PositiveInt = 5000
    max_cost: PositiveInt = 50_000
    max_body_bytes: PositiveInt = 256 * 1024
    rate_limit_per_minute: PositiveInt = 600
    rate_limit_burst: PositiveInt = 120
    pool_size: PositiveInt = 20
    default_list_size: PositiveInt = 20
    operations_dir: Path | None = None
    db_connect_timeout: PositiveFloat = 3.0
    db_command_timeout: PositiveFloat = 30.0
    db_pool_timeout: PositiveFloat = 3.0
    db_pool_pre_ping: bool = False
    audit_lock_timeout: PositiveFloat = 1.0
    header_timeout: PositiveFloat = 10.0
    body_timeout: PositiveFloat = 30.0
    max_connections: PositiveInt = 1000
    policy_dirs: str = ""
    server_timing: bool | None = None

    @field_validator("env", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value


def _environment() -> _Environment:
    try:
        return _Environment()
    except ValidationError as error:
        # Which variable and why, never its value (it may be a secret).
        problems = "; ".join(
            f"PLEDGEQL_{'.'.join(str(part) for part in e['loc']).upper()}: {e['msg']}" for e in error.errors()
        )
        raise SystemExit(f"Invalid configuration: {problems}") from None


def _listed(raw: str, separator: str = ",") -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(separator) if item.strip())


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


@dataclass(frozen=True)
class Settings:
    env: str = "development"
    data_dir: Path = Path(".pledgeql")
    database_url: str | None = None
    app_database_url: str | None = None
    jwt_secret: str | None = field(default=None, repr=False)
    jwt_public_key_file: str | None = None
    jwks_file: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    trusted_proxy_header: str | None = None
    cors_origins: tuple[str, ...] = ()
    cors_extra_headers: tuple[str, ...] = ()
    # `serve --demo`: GraphiQL's Authorization header is prefilled with the demo token.
    graphiql_token: str | None = field(default=None, repr=False)
    # PLEDGEQL_AUDIT_KEY: the audit chain's key (``audit_key()``).
    audit_secret: str | None = field(default=None, repr=False)
    max_depth: int = 12
    max_aliases: int = 30
    max_tokens: int = 5000
    max_cost: int = 50_000
    max_body_bytes: int = 256 * 1024
    rate_limit_per_minute: int = 600
    rate_limit_burst: int = 120
    pool_size: int = 20
    # Hardening (issue 8): the cost model's size of a list without `first`, the
    # production allow-list folder, and how fast a database outage is noticed.
    default_list_size: int = 20
    operations_dir: Path | None = None
    db_connect_timeout: float = 3.0
    db_command_timeout: float = 30.0
    db_pool_timeout: float = 3.0
    db_pool_pre_ping: bool = False
    # Faults (issue 19): how long a request may wait for its district's audit
    # chain lock, and the read timeouts and connection cap of each worker.
    audit_lock_timeout: float = 1.0
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections: int = 1000
    policy_dirs: tuple[Path, ...] = ()
    # PLEDGEQL_SERVER_TIMING: the Server-Timing header on /graphql responses;
    # unset, it is on in development and off in production.
    server_timing: bool | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def sends_server_timing(self) -> bool:
        return self.server_timing if self.server_timing is not None else not self.is_production

    @classmethod
    def from_env(cls) -> Settings:
        env = _environment()
        # A variable whose setting has its name and its value as parsed is copied as it is;
        # the others are converted here (secrets unwrapped, lists split).
        converted: dict[str, Any] = {
            "jwt_secret": _secret(env.jwt_secret),
            "graphiql_token": _secret(env.graphiql_token),
            "audit_secret": _secret(env.audit_key),
            "cors_origins": _listed(env.cors_origins),
            "cors_extra_headers": _listed(env.cors_extra_headers),
            "policy_dirs": tuple(Path(d) for d in _listed(env.policy_dirs, ":")),
        }
        copied = {
            name: getattr(env, name)
            for name in _Environment.model_fields
            if name not in converted and name in _SETTING_NAMES
        }
        return cls(**copied, **converted)

    def configured_audit_key(self) -> str | None:
        """PLEDGEQL_AUDIT_KEY (or the key a test configured), or None."""
        return self.extra.get("audit_key") or self.audit_secret or None

    def audit_key(self) -> bytes:
        """The audit chain's HMAC key: configured, or (development) generated once into the data dir.

        It must never be stored in the database: whoever holds it can forge a chain.
        Production never generates one: every node must chain under the same key.
        """
        configured = self.configured_audit_key()
        if configured:
            return configured.encode()
        if self.is_production:
            raise SystemExit(
                "Production needs PLEDGEQL_AUDIT_KEY: set it to the audit chain's secret key, the same on every "
                "node (and for pledgeql audit verify); it is never generated in production"
            )
        return self._secret_file("audit_key").encode()

    def has_audit_key(self) -> bool:
        """Whether a key is configured or already generated: a verifier must not mint a new one."""
        return bool(self.configured_audit_key()) or (not self.is_production and (self.data_dir / "audit_key").is_file())

    def _secret_file(self, name: str) -> str:
        """A secret generated once into the data dir, whichever process gets there first.

        Several workers start at once on a fresh data dir: each writes its
        candidate to a file of its own, then links it into place, which only
        one can do; the others read the winner's, whole (a link appears with
        its content, never half-written)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        path = self.data_dir / name
        if not path.exists():
            candidate = self.data_dir / f".{name}.{os.getpid()}.{secrets.token_hex(4)}"
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "w") as handle:
                    handle.write(secrets.token_urlsafe(48))
                    handle.flush()
                    os.fsync(handle.fileno())
                with contextlib.suppress(FileExistsError):
                    os.link(candidate, path)
            finally:
                candidate.unlink(missing_ok=True)
        return path.read_text().strip()

    def development_jwt_secret(self) -> str:
        """The HS256 secret: configured, or generated once into the data dir."""
        if self.jwt_secret:
            return self.jwt_secret
        return self._secret_file("jwt_secret")


_SETTING_NAMES = frozenset(f.name for f in fields(Settings))
