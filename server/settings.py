"""Configuration from the environment (and an optional `.env` file)."""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

ENV_FILE = ".env"


def _read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip().strip('"').strip("'")
    return values


def _env() -> dict[str, str]:
    merged = _read_env_file(Path(ENV_FILE))
    merged.update(os.environ)
    return merged


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {raw!r}") from None


def _seconds(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SystemExit(f"{name} must be a number of seconds, got {raw!r}") from None
    if not value > 0:
        raise SystemExit(f"{name} must be more than 0 seconds, got {raw!r}")
    return value


def _flag(env: dict[str, str], name: str) -> bool | None:
    """A yes/no setting: None when unset, so that the mode's default applies."""
    raw = env.get(name, "").strip().lower()
    if not raw:
        return None
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SystemExit(f"{name} must be 1 or 0, got {raw!r}")


@dataclass(frozen=True)
class Settings:
    env: str = "development"
    data_dir: Path = Path(".pledgeql")
    database_url: str | None = None
    app_database_url: str | None = None
    jwt_secret: str | None = None
    jwt_public_key_file: str | None = None
    jwks_file: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    trusted_proxy_header: str | None = None
    cors_origins: tuple[str, ...] = ()
    cors_extra_headers: tuple[str, ...] = ()
    # `serve --demo`: GraphiQL's Authorization header is prefilled with the demo token.
    graphiql_token: str | None = None
    max_depth: int = 12
    max_aliases: int = 30
    max_tokens: int = 5000
    max_cost: int = 50_000
    max_batch: int = 10
    max_body_bytes: int = 256 * 1024
    rate_limit_per_minute: int = 600
    rate_limit_burst: int = 120
    pool_size: int = 10
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
    # Issue 13: the Server-Timing header on /graphql responses (how a request was
    # served); on in development, off in production unless PLEDGEQL_SERVER_TIMING=1.
    server_timing: bool | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def sends_server_timing(self) -> bool:
        """Whether /graphql responses carry Server-Timing: configured, else outside production."""
        return not self.is_production if self.server_timing is None else self.server_timing

    @classmethod
    def from_env(cls) -> Settings:
        env = _env()
        mode = env.get("PLEDGEQL_ENV", "development").strip().lower() or "development"
        if mode not in ("development", "production", "test"):
            raise SystemExit(f"PLEDGEQL_ENV must be development, production or test, got {mode!r}")
        origins = tuple(o.strip() for o in env.get("PLEDGEQL_CORS_ORIGINS", "").split(",") if o.strip())
        return cls(
            env=mode,
            data_dir=Path(env.get("PLEDGEQL_DATA_DIR", ".pledgeql")),
            database_url=env.get("PLEDGEQL_DATABASE_URL") or None,
            app_database_url=env.get("PLEDGEQL_APP_DATABASE_URL") or None,
            jwt_secret=env.get("PLEDGEQL_JWT_SECRET") or None,
            jwt_public_key_file=env.get("PLEDGEQL_JWT_PUBLIC_KEY_FILE") or None,
            jwks_file=env.get("PLEDGEQL_JWKS_FILE") or None,
            jwt_issuer=env.get("PLEDGEQL_JWT_ISSUER") or None,
            jwt_audience=env.get("PLEDGEQL_JWT_AUDIENCE") or None,
            trusted_proxy_header=env.get("PLEDGEQL_TRUSTED_PROXY_HEADER") or None,
            cors_origins=origins,
            graphiql_token=env.get("PLEDGEQL_GRAPHIQL_TOKEN") or None,
            cors_extra_headers=tuple(
                h.strip() for h in env.get("PLEDGEQL_CORS_EXTRA_HEADERS", "").split(",") if h.strip()
            ),
            max_depth=_int(env, "PLEDGEQL_MAX_DEPTH", 12),
            max_aliases=_int(env, "PLEDGEQL_MAX_ALIASES", 30),
            max_tokens=_int(env, "PLEDGEQL_MAX_TOKENS", 5000),
            max_cost=_int(env, "PLEDGEQL_MAX_COST", 50_000),
            max_batch=_int(env, "PLEDGEQL_MAX_BATCH", 10),
            max_body_bytes=_int(env, "PLEDGEQL_MAX_BODY_BYTES", 256 * 1024),
            rate_limit_per_minute=_int(env, "PLEDGEQL_RATE_LIMIT_PER_MINUTE", 600),
            rate_limit_burst=_int(env, "PLEDGEQL_RATE_LIMIT_BURST", 120),
            pool_size=_int(env, "PLEDGEQL_POOL_SIZE", 10),
            default_list_size=_int(env, "PLEDGEQL_DEFAULT_LIST_SIZE", 20),
            operations_dir=Path(env["PLEDGEQL_OPERATIONS_DIR"]) if env.get("PLEDGEQL_OPERATIONS_DIR") else None,
            db_connect_timeout=float(_int(env, "PLEDGEQL_DB_CONNECT_TIMEOUT", 3)),
            db_command_timeout=float(_int(env, "PLEDGEQL_DB_COMMAND_TIMEOUT", 30)),
            db_pool_timeout=float(_int(env, "PLEDGEQL_DB_POOL_TIMEOUT", 3)),
            db_pool_pre_ping=env.get("PLEDGEQL_DB_POOL_PRE_PING", "").strip().lower() in ("1", "true", "yes", "on"),
            audit_lock_timeout=_seconds(env, "PLEDGEQL_AUDIT_LOCK_TIMEOUT", 1.0),
            header_timeout=_seconds(env, "PLEDGEQL_HEADER_TIMEOUT", 10.0),
            body_timeout=_seconds(env, "PLEDGEQL_BODY_TIMEOUT", 30.0),
            max_connections=_int(env, "PLEDGEQL_MAX_CONNECTIONS", 1000),
            policy_dirs=tuple(Path(d) for d in env.get("PLEDGEQL_POLICY_DIRS", "").split(":") if d.strip()),
            server_timing=_flag(env, "PLEDGEQL_SERVER_TIMING"),
        )

    def configured_audit_key(self) -> str | None:
        """PLEDGEQL_AUDIT_KEY (or the key a test configured), or None."""
        return self.extra.get("audit_key") or _env().get("PLEDGEQL_AUDIT_KEY") or None

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
