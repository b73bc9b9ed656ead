"""One typed settings object, read from the environment (``MEDIAMILL_*``) and an optional TOML file.

The TOML file is named by ``MEDIAMILL_CONFIG`` (or ``mediamill.toml`` in the working
directory when present); environment variables win over the file. Every limit the engine,
the media code and the API enforce lives here, in one place.
"""

from __future__ import annotations

import os
import tomllib
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from mediamill.errors import ConfigError


class MediaLimits(BaseSettings):
    """Security limits for hostile media; one place for all of them."""

    model_config = SettingsConfigDict(env_prefix="MEDIAMILL_LIMIT_", extra="ignore")

    max_pixels: int = Field(default=100_000_000, gt=0, description="decompression-bomb guard for images")
    max_image_dimension: int = Field(default=30_000, gt=0)
    max_video_duration_s: float = Field(default=4 * 3600, gt=0)
    max_video_pixels: int = Field(default=7680 * 4320, gt=0, description="width × height of a video frame")
    max_audio_duration_s: float = Field(default=6 * 3600, gt=0)
    max_document_pages: int = Field(default=2000, gt=0)
    max_input_bytes: int = Field(default=20 * 1024**3, gt=0)
    max_archive_uncompressed_bytes: int = Field(
        default=1024**3, gt=0, description="a DOCX (a ZIP) may not inflate to more than this")
    max_archive_ratio: float = Field(default=200.0, gt=1, description="ZIP-bomb guard: inflated / packed size")
    max_transcribe_seconds: float = Field(
        default=3 * 3600, gt=0, description="longest audio transcribe_audio accepts (speech-to-text is slow)")
    child_memory_mb: int = Field(default=4096, gt=0, description="address-space limit of a step child")
    child_cpu_seconds: int = Field(default=7200, gt=0)
    child_file_size_mb: int = Field(default=50 * 1024, gt=0)


class _TomlSource(PydanticBaseSettingsSource):
    """Settings from a TOML file: top-level keys, plus a ``[limits]`` table."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self._data: dict[str, Any] = {}
        if path is not None:
            try:
                self._data = tomllib.loads(path.read_text())
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(f"config file {path}: {exc}") from exc

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self._data.items() if k in self.settings_cls.model_fields}


def _config_file() -> Path | None:
    named = os.environ.get("MEDIAMILL_CONFIG")
    if named:
        return Path(named)
    default = Path("mediamill.toml")
    return default if default.is_file() else None


class Settings(BaseSettings):
    """mediamill's configuration. Environment variables are ``MEDIAMILL_`` + the field name."""

    model_config = SettingsConfigDict(env_prefix="MEDIAMILL_", extra="ignore", validate_default=True)

    data_dir: Path = Path("./mediamill-data")
    database_url: str = ""  # default: sqlite file in data_dir
    storage_url: str = ""  # default: storage/ folder in data_dir
    storage_min_free_mb: int = Field(default=512, ge=0, description="below this much free space on local storage "
                                     "new inputs are refused (HTTP 507) and /readyz answers 503; 0 = no floor")
    # engine
    lease_seconds: int = Field(default=30, description="how long a claim lives without a heartbeat")
    heartbeat_seconds: float = Field(default=0, description="0 = a third of lease_seconds")
    max_rescues: int = Field(default=3, description="rescues before a job is dead-lettered as poison")
    poll_interval: float = Field(default=1.0, description="polling fallback when no wake-up arrives")
    progress_seconds: float = Field(default=5.0, ge=1.0, description="a running job's progress is written at most "
                                    "this often (with the worker's heartbeat, one transaction for all its jobs)")
    claim_batch: int = Field(default=200, description="most jobs one claim takes (cheap inline jobs)")
    prefetch: int = Field(default=1, ge=0, le=16, description="jobs a worker holds per pool beyond its free slots, "
                          "ready to start the moment a slot frees, of workflows known to be short "
                          "(prefetch_max_seconds); 0 = claim only for free slots")
    prefetch_max_seconds: float = Field(default=2.0, ge=0, description="prefetch only jobs of workflow versions "
                                        "whose jobs held a slot less than this on average")
    aging_seconds: float = Field(default=60, description="a queued job gains one priority point per interval")
    aging_max_priority: int = Field(default=10, description="ageing raises a waiting job's priority up to this")
    retry_base_seconds: float = 2.0
    retry_max_seconds: float = 600.0
    child_pool_size: int = 0  # 0 = sum of pool concurrencies
    child_max_tasks: int = Field(default=200, description="recycle a step child after this many steps")
    shutdown_grace_seconds: float = 30.0
    retention_days: int = Field(default=30, description="finished jobs older than this are pruned (0 = keep)")
    worker_retention_hours: float = Field(default=24, ge=0, description="rows of workers that stopped or were lost "
                                          "are deleted this long after their last heartbeat (0 = keep)")
    breaker_window_seconds: int = 300
    breaker_min_calls: int = 5
    breaker_failure_rate: float = 0.5
    breaker_cooldown_seconds: int = 30
    pools: str = Field(default="", description='default pools for serve/worker, e.g. "video=1,image=4"')
    # PostgreSQL network timeouts (a cut host must not hold row locks until TCP gives up, ~2 h);
    # 0 turns one off. Migrations run without the statement timeout.
    db_connect_timeout_seconds: int = Field(default=10, ge=0, description="give up connecting after this long")
    db_keepalives_idle_seconds: int = Field(default=30, ge=0, description="TCP keepalive probes start after this "
                                                                          "much silence (0 = no keepalives)")
    db_keepalives_interval_seconds: int = Field(default=10, gt=0, description="seconds between keepalive probes")
    db_keepalives_count: int = Field(default=3, gt=0, description="unanswered probes before the link is dead")
    db_idle_in_transaction_timeout_seconds: float = Field(
        default=60, ge=0, description="the server ends a session idle inside a transaction this long")
    db_statement_timeout_seconds: float = Field(
        default=300, ge=0, description="the server cancels a statement running longer than this")
    db_pgbouncer: bool = Field(default=False, description="PostgreSQL is reached through PgBouncer in transaction "
                               "mode: no server-side prepared statements, no LISTEN (workers and the API poll), no "
                               "startup options (same as ?pgbouncer=true in the database URL)")
    s3_public_endpoint: str = Field(default="", description="S3 address presigned links handed to clients use "
                                                            "(when it differs from AWS_ENDPOINT_URL)")
    # api
    host: str = "127.0.0.1"
    port: int = 8000
    max_upload_bytes: int = 20 * 1024**3
    max_request_bytes: int = 1024**2
    max_header_bytes: int = Field(default=64 * 1024, ge=1024, description="request line + headers larger than "
                                                                          "this are refused with 431")
    max_header_count: int = Field(default=100, ge=10, description="requests with more header fields: 431")
    submit_rate_per_minute: int = 600
    auth_failures_per_address: int = Field(default=30, gt=0, description="failed API-key/login attempts a minute "
                                                                        "from one client address before 429")
    auth_failures_per_key: int = Field(default=10, gt=0, description="failed attempts a minute on one key prefix "
                                                                    "before 429")
    outbound_proxy: str = Field(default="", description="an HTTP proxy for URL inputs, webhooks and http_request "
                                                        "(proxy environment variables are ignored)")
    url_allowlist: str = Field(default="", description="comma-separated hosts/CIDRs allowed despite the SSRF guard")
    public_url: str = ""
    secret_key: str = Field(default="", description="the install key every secret derives from; share it between "
                                                    "machines (\"\" = generated once in data_dir/secret_key)")
    metrics_require_key: bool = False
    log_format: str = Field(default="auto", description="auto | json | console")
    log_level: str = "INFO"
    limits: MediaLimits = Field(default_factory=MediaLimits)
    # observability (issue 6)
    metrics_dir: str = Field(default="", description='shared multiprocess metrics dir; "" = data_dir/metrics, '
                                                     '"off" = this process only')
    metrics_port: int = Field(default=0, ge=0, le=65535, description="worker/api/notifier: serve /metrics, "
                                                                     "/healthz and /readyz on this port (0 = off)")
    metrics_host: str = Field(default="", description='bind address of the metrics port ("" = MEDIAMILL_HOST)')
    metrics_db_cache_seconds: float = Field(default=5.0, ge=0, description="database gauges are reused this long")
    # notifications (issue 6)
    notify_poll_seconds: float = Field(default=1.0, gt=0, description="dispatcher polling interval")
    notify_batch: int = Field(default=50, gt=0, description="deliveries claimed per dispatcher round")
    notify_concurrency: int = Field(default=8, gt=0, description="deliveries in flight per dispatcher")
    notify_lock_seconds: float = Field(default=120.0, gt=0, description="a claimed delivery is re-offered "
                                                                         "after this long without an answer")
    notify_timeout_seconds: float = Field(default=15.0, gt=0, description="per-attempt HTTP/SMTP timeout")
    notify_max_attempts: int = Field(default=15, gt=0)
    notify_max_age_seconds: float = Field(default=3 * 86400, gt=0, description="give up on older deliveries")
    notify_backoff_base_seconds: float = Field(default=5.0, gt=0)
    notify_backoff_max_seconds: float = Field(default=3600.0, gt=0)
    notify_retention_days: int = Field(default=30, ge=0, description="finished deliveries are pruned (0 = keep)")
    smtp_host: str = "localhost"
    smtp_port: int = Field(default=25, gt=0)
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_starttls: bool = False
    smtp_tls: bool = Field(default=False, description="implicit TLS (port 465)")
    smtp_from: str = "mediamill <mediamill@localhost>"
    alert_rules_file: str = Field(default="", description="TOML file with [[rules]] tables")
    alert_rules_json: str = Field(default="", description="alert rules as a JSON list (env-friendly)")
    alert_default_rules: bool = Field(default=True, description="evaluate the built-in alert rules too")
    alert_eval_seconds: float = Field(default=15.0, gt=0, description="alert evaluation interval")

    # api (issue 5)
    sse_poll_seconds: float = Field(default=0.05, gt=0, description="how often the event stream reads new job events")
    upload_expiry_seconds: int = Field(default=86400, gt=0, description="an unfinished tus upload expires after this")
    uploads_dir: str = Field(default="", description='where unfinished tus uploads are kept on local storage; '
                                                     '"" = data_dir/uploads (share it between API replicas behind one '
                                                     "address: a replica without an upload's bytes answers 409; on S3 "
                                                     "storage they are multipart parts in the bucket)")
    api_workers: int = Field(default=1, gt=0, description="uvicorn worker processes of `mediamill api`")
    cors_origins: str = Field(default="", description="comma-separated origins allowed to call the API from a "
                                                      "browser (tus-js-client / Uppy on another site); \"\" = none")
    header_timeout_seconds: float = Field(default=10.0, gt=0, description="a request head (line and headers) must "
                                                                          "arrive within this; slower clients are cut")
    keepalive_timeout_seconds: float = Field(default=5.0, gt=0, description="an idle keep-alive connection closes")
    body_idle_timeout_seconds: float = Field(default=60.0, gt=0, description="a request body that sends nothing "
                                                                             "for this long is answered 408")
    max_uploads_per_key: int = Field(default=8, gt=0, description="concurrent uploads of one API key (429 above)")

    # sources (watch folders and buckets)
    run_sources: bool = Field(default=True, description="serve runs the sources (one process per source is elected)")
    source_poll_seconds: float = Field(default=10.0, gt=0, description="folder scan / bucket listing interval "
                                                                        "(file-system events wake folders sooner)")
    source_settle_seconds: float = Field(default=5.0, ge=0, description="a file is taken once its size and mtime "
                                                                         "held this long")
    source_max_queue: int = Field(default=500, gt=0, description="a source stops taking files while its "
                                                                 "workflow's queue is this deep")
    source_tick_seconds: float = Field(default=1.0, gt=0, description="how often a source takes pending files "
                                                                      "and finishes taken ones")
    source_rescan_seconds: float = Field(default=600.0, gt=0, description="a bucket is listed from the start "
                                                                           "this often (else from its high-water "
                                                                           "mark, which misses keys that sort "
                                                                           "before it)")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlSource(settings_cls, _config_file()))

    @field_validator("lease_seconds", "max_rescues", "claim_batch", "port",
                     "child_max_tasks", "breaker_window_seconds", "breaker_min_calls",
                     "breaker_cooldown_seconds", "max_upload_bytes", "max_request_bytes",
                     "submit_rate_per_minute")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value <= 0:
            raise ValueError(f"must be positive, got {value}")
        return value

    @field_validator("poll_interval", "retry_base_seconds", "retry_max_seconds", "shutdown_grace_seconds",
                     "aging_seconds")
    @classmethod
    def _positive_float(cls, value: float) -> float:
        if value <= 0:
            raise ValueError(f"must be positive, got {value}")
        return value

    @field_validator("breaker_failure_rate")
    @classmethod
    def _rate(cls, value: float) -> float:
        if not 0 < value <= 1:
            raise ValueError(f"must be in (0, 1], got {value}")
        return value

    @field_validator("secret_key")
    @classmethod
    def _secret_key(cls, value: str) -> str:
        if value and len(value) < 32:
            raise ValueError(f"must be at least 32 characters (e.g. `openssl rand -hex 32`), got {len(value)}")
        return value

    @field_validator("log_format")
    @classmethod
    def _log_format(cls, value: str) -> str:
        if value not in ("auto", "json", "console"):
            raise ValueError(f"expected auto|json|console, got {value!r}")
        return value

    @field_validator("database_url")
    @classmethod
    def _db_url(cls, value: str) -> str:
        if value and not value.startswith(("sqlite", "postgresql", "postgres://")):
            raise ValueError(f"expected a sqlite:// or postgresql:// URL, got {value!r}")
        return value

    @field_validator("storage_url")
    @classmethod
    def _storage_url(cls, value: str) -> str:
        if value and not value.startswith(("file://", "s3://", "/", ".")):
            raise ValueError(f"expected a local path, file:// or s3:// URL, got {value!r}")
        return value

    @field_validator("s3_public_endpoint")
    @classmethod
    def _s3_public_endpoint(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
        return value.rstrip("/")

    # -- derived -------------------------------------------------------------------------
    @cached_property
    def effective_database_url(self) -> str:
        url = self.database_url or f"sqlite:///{(self.data_dir / 'mediamill.db').resolve()}"
        if url.startswith("postgres://"):
            url = "postgresql://" + url[len("postgres://"):]
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://"):]
        return url

    @cached_property
    def effective_storage_url(self) -> str:
        return self.storage_url or f"file://{(self.data_dir / 'storage').resolve()}"

    @property
    def effective_heartbeat_seconds(self) -> float:
        return self.heartbeat_seconds or max(self.lease_seconds / 3, 0.2)

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")

    def parsed_pools(self, override: list[str] | None = None) -> dict[str, int]:
        """Parse ``QUEUE=N`` pairs (from --pool flags or MEDIAMILL_POOLS)."""
        items = override if override else [p for p in self.pools.split(",") if p.strip()]
        return parse_pools(items)


def parse_pools(items: list[str]) -> dict[str, int]:
    pools: dict[str, int] = {}
    for item in items:
        name, sep, count = item.strip().partition("=")
        if not sep or not name or not (count.isascii() and count.isdigit()) or int(count) <= 0:
            raise ConfigError(f"pool must look like QUEUE=N with N > 0, got {item!r}")
        pools[name] = int(count)
    return pools


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the settings; a bad value raises ConfigError naming the setting."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = "MEDIAMILL_" + "_".join(str(p) for p in err["loc"]).upper()
            lines.append(f"{name}: {err['msg']} (got {err.get('input')!r})")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from exc
