"""One settings object for the whole process, read from the environment (prefix REFERRAL_)."""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.lifecycle import (
    DEFAULT_DECISION_CLOSE,
    DEFAULT_DECISION_SECOND_REMINDER,
    DEFAULT_INTAKE_DEADLINE,
    DEFAULT_MAX_MISSED_REPORTS,
    DEFAULT_ON_HOLD_LIMIT,
)


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class AccessWriterKind(StrEnum):
    """Who writes the entries of the reads served on the API's event loop."""

    PROCESS = "process"
    THREAD = "thread"


class OtelExporter(StrEnum):
    NONE = "none"
    CONSOLE = "console"
    OTLP = "otlp"
    MEMORY = "memory"


class Settings(BaseSettings):
    """Every setting of the engine; production refuses development keys and demo users."""

    model_config = SettingsConfigDict(env_prefix="REFERRAL_", env_file=None, extra="ignore")

    environment: Environment = Environment.DEVELOPMENT
    data_dir: Path = Path(".data")

    database_url: str = "sqlite:///.data/referral.db"
    # The request pool: a request that cannot get a connection within `db_pool_timeout_seconds`
    # is answered 503, never left hanging. The audit writer has its own small pool, so an
    # audit append never waits for a connection a request holds.
    # The same ceiling of 20 connections as 10 pooled and 10 overflow, kept open: an overflow
    # connection is closed when returned and opened again under the next burst (on SQLite
    # each new one parses the schema and sets its pragmas: 6 % of the API's busy time at 32
    # concurrent reads).
    db_pool_size: int = Field(default=20, ge=1)
    db_max_overflow: int = Field(default=0, ge=0)
    db_pool_timeout_seconds: float = Field(default=5.0, gt=0)
    # PostgreSQL statement_timeout and SQLite busy timeout (a lock wait ends in an error).
    db_statement_timeout_seconds: float = Field(default=15.0, gt=0)
    audit_pool_size: int = Field(default=2, ge=1)
    audit_pool_timeout_seconds: float = Field(default=10.0, gt=0)
    # The entries of the reads served on the event loop are committed in batches. Under load
    # (entries queued while the last batch was written) a batch also takes the entries of
    # the requests the loop serves in its next turns, for at most this long after its first:
    # more entries per transaction and fsync, fewer commits emptying the loop's read cache.
    # An idle loop turns at once; a lone read never waits. 0: write what is queued at once.
    audit_batch_window_ms: float = Field(default=20.0, ge=0, le=100)
    # Who writes those entries: a child process of the API (`services/access_process.py`),
    # which leaves the API's interpreter to the reads, or a thread of the API. In four
    # paired runs the child gave 0.23 to 0.24 of the bare route at 8 concurrent (the thread
    # 0.17 to 0.19) and 0.26 to 0.33 at 32 (0.22 to 0.27), with the same lifecycles/min,
    # once SQLite's writers took turns (`services/write_turns.py`): before that, the child
    # and the API's request threads met in SQLite's busy handler and lost 10 % of them.
    audit_access_writer: AccessWriterKind = AccessWriterKind.PROCESS
    # How long a request waits for the referral's workflow to take a step (an update): then
    # it answers 503 (try again, with the same Idempotency-Key), well before a client gives
    # up. The step may still be taken: a keyed retry finishes it or repeats its answer.
    workflow_update_timeout_seconds: float = Field(default=30.0, gt=0)
    # The worker's reconciler starts every workflow whose start intent is still pending.
    reconcile_every_seconds: float = Field(default=5.0, gt=0)
    # Stored answers of steps, replayed for a retry with the same Idempotency-Key.
    idempotency_ttl_seconds: int = Field(default=24 * 3600, gt=0)

    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    temporal_task_queue: str = "referrals"
    temporal_ui_port: int = 8233
    temporal_ui_origin: str = "http://127.0.0.1:8233"
    # How long Temporal keeps a closed workflow's history (the namespace retention, set by
    # the worker at start). A referral's workflow closes with its purge, whose history is
    # unreadable from then on; this bounds how long even its ciphertext stays. Temporal's
    # minimum is one day.
    temporal_retention_days: int = Field(default=1, ge=1)

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_base_url: str = "http://127.0.0.1:8000"
    max_body_bytes: int = 64 * 1024
    # Strict-Transport-Security on every answer: on by default in production (behind TLS),
    # off for plain-http development.
    hsts: bool | None = None

    # Token validation (Keycloak realm `referral`): issuer and audience are always required.
    # The API checks access tokens offline (signature, expiry), so a logout or a disabled
    # user loses API access only when the token expires: the realm's access-token lifetime
    # (accessTokenLifespan, 300 s = 5 minutes in deploy/keycloak/realm) bounds it. Keep it
    # short in production too. The key set is used for `jwks_cache_seconds`, then replaced
    # whole (keys dropped from the JWKS stop being trusted); it is fetched at most every
    # `jwks_refetch_seconds` (unknown key id, or identity provider down: 503).
    jwks_url: str = "http://127.0.0.1:8081/realms/referral/protocol/openid-connect/certs"
    jwt_issuer: str = "http://127.0.0.1:8081/realms/referral"
    jwt_audience: str = "referral-api"
    jwks_cache_seconds: int = Field(default=300, gt=0)
    jwks_refetch_seconds: float = Field(default=5.0, ge=0)

    # Liveness: /healthz fails when a request thread cannot be had within this time (the
    # process no longer serves), and `make run` then restarts the API. On SIGTERM the API
    # and the worker finish what they do for at most their grace, then exit regardless.
    liveness_timeout_seconds: float = Field(default=5.0, gt=0)
    api_shutdown_grace_seconds: int = Field(default=10, gt=0)
    worker_shutdown_grace_seconds: float = Field(default=15.0, gt=0)

    # The development Keycloak that `make run` starts (deploy/keycloak/).
    keycloak_port: int = 8081
    keycloak_token_url: str = "http://127.0.0.1:8081/realms/referral/protocol/openid-connect/token"
    keycloak_cli_client: str = "referral-cli"

    # Web login sessions (api/web_auth.py): the cookie is Secure unless turned off for
    # plain-http development.
    session_cookie_secure: bool = True
    session_max_age_seconds: int = Field(default=8 * 3600, gt=0)

    # Development-only: the demo users of the development realm. Refused in production.
    demo_users_enabled: bool = True

    # Development-only file key ring. Refused in production unless explicitly allowed.
    keyring_path: Path = Path(".data/keyring.json")
    allow_file_keyring_in_production: bool = False

    # The audit signing key lives apart from the key ring (services/audit/keys.py): a
    # development file by default (data_dir/audit-signing-key.json), refused in production.
    audit_key_path: Path | None = None
    allow_file_audit_key_in_production: bool = False

    # Signed tree heads of the audit log: every N entries or T seconds, and on demand.
    audit_sth_every_entries: int = Field(default=1000, gt=0)
    audit_sth_every_seconds: float = Field(default=60.0, gt=0)
    # This node's id in every audit entry (ATNA AuditSourceID); the host name when unset.
    audit_source_node: str | None = Field(default=None, min_length=1, max_length=128)

    otel_exporter: OtelExporter = OtelExporter.NONE
    otel_endpoint: str = "http://127.0.0.1:4318"
    otel_service_name: str = "referral-engine"

    # Default durations of the programme (seconds); a cooperation framework may override
    # the reporting cadence, the retention periods and the deadlines of the open states.
    # Every open state has a deadline, so every referral ends and reaches its purge.
    consent_deadline_seconds: int = Field(default=14 * 86400, gt=0)
    acceptance_sla_seconds: int = Field(default=5 * 86400, gt=0)
    acceptance_reminder_seconds: int = Field(default=3 * 86400, gt=0)
    # accepted, and no intake by then: back to justice
    intake_deadline_seconds: int = Field(default=DEFAULT_INTAKE_DEADLINE, gt=0)
    # on hold (no provider left) this long: back to justice
    on_hold_limit_seconds: int = Field(default=DEFAULT_ON_HOLD_LIMIT, gt=0)
    # this many progress reports missed in a row: back to justice
    max_missed_reports: int = Field(default=DEFAULT_MAX_MISSED_REPORTS, gt=0)
    # the prosecutor's decision: a reminder at the deadline, a second one this long after
    # it, then the referral closes with no decision (and its retention starts)
    decision_deadline_seconds: int = Field(default=30 * 86400, gt=0)
    decision_second_reminder_seconds: int = Field(default=DEFAULT_DECISION_SECOND_REMINDER, gt=0)
    decision_close_seconds: int = Field(default=DEFAULT_DECISION_CLOSE, gt=0)

    @model_validator(mode="after")
    def _refuse_development_material_in_production(self) -> Settings:
        if self.environment is Environment.PRODUCTION:
            if not self.session_cookie_secure:
                raise ValueError("session cookies must be Secure in production")
            if self.demo_users_enabled:
                raise ValueError("demo users are refused in production")
            if not self.jwks_url.startswith("https://"):
                raise ValueError("the JWKS URL must use https in production")
            if self.database_url.startswith("sqlite"):
                raise ValueError("the embedded SQLite database is refused in production")
        if self.decision_second_reminder_seconds >= self.decision_close_seconds:
            raise ValueError("the second decision reminder must come before the closing")
        return self

    @property
    def is_production(self) -> bool:
        return self.environment is Environment.PRODUCTION

    @property
    def hsts_enabled(self) -> bool:
        return self.is_production if self.hsts is None else self.hsts

    @property
    def audit_key_file(self) -> Path:
        """Where the development audit signing key lives."""
        return self.audit_key_path or self.data_dir / "audit-signing-key.json"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (read once from the environment)."""
    return Settings()
