"""SQLAlchemy Core tables: the six core tables of the public data model, plus the engine's additions.

The six core tables are a public data model: other tools insert rows with plain SQL and run
their own reports on them (tests/fixtures/seed_001_*.sql are such rows and reports, checked by
tests/store/test_seed.py). So every column mediamill added to them has a default or is
nullable, and timestamps are naive UTC (``TIMESTAMP`` without time zone), which keeps a report's
``EXTRACT(EPOCH FROM …)`` true on PostgreSQL.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=NAMING)

# BIGINT on PostgreSQL, INTEGER (rowid alias) on SQLite
BigId = BigInteger().with_variant(Integer(), "sqlite")
NOW = text("CURRENT_TIMESTAMP")

# --------------------------------------------------------------------------- tenancy / auth
tenants = Table(
    "tenants", metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200)),
    Column("created_at", DateTime, server_default=NOW),
    # where per-job ``deliver`` overrides may write (folder paths / s3:// prefixes); NULL = nowhere
    Column("deliver_prefixes", JSON),
)

api_keys = Table(
    "api_keys", metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False),
    Column("name", String(200)),
    Column("prefix", String(16), nullable=False, unique=True),
    Column("key_hash", String(128), nullable=False),
    Column("role", String(20), nullable=False),
    Column("created_at", DateTime, server_default=NOW),
    Column("revoked_at", DateTime),
    Column("last_used_at", DateTime),
)

# Dashboard session nonces that were logged out and one-time login links already redeemed: refused
# by every API process until the token would have expired anyway (then pruned).
# One row: a fingerprint of the install key the database was set up with, so a process started
# with another key (a replica without the shared MEDIAMILL_SECRET_KEY) is refused at start instead
# of failing every session, signed URL and encrypted secret later.
installation = Table(
    "installation", metadata,
    Column("id", Integer, primary_key=True),
    Column("key_check", String(64), nullable=False),
    Column("created_at", DateTime, server_default=NOW),
)

spent_tokens = Table(
    "spent_tokens", metadata,
    Column("token", String(100), primary_key=True),
    Column("expires_at", DateTime, nullable=False, index=True),
    Column("created_at", DateTime, server_default=NOW),
)

# --------------------------------------------------------------------------- core: workflow definitions
workflow_definitions = Table(
    "workflow_definitions", metadata,
    Column("id", Integer, primary_key=True),
    Column("workflow_code", String(50), nullable=False, unique=True),
    Column("workflow_name", String(200)),
    Column("description", Text),
    Column("workflow_type", String(50)),
    Column("input_types", Text),
    Column("output_types", Text),
    Column("steps_json", Text),
    Column("default_priority", Integer, server_default=text("5")),
    Column("timeout_minutes", Integer, server_default=text("60")),
    Column("retry_count", Integer, server_default=text("3")),
    Column("is_active", Boolean, server_default=text("TRUE")),
    Column("created_by", String(100)),
    Column("created_at", DateTime, server_default=NOW),
    # additions
    Column("current_version", Integer),
    Column("queue_name", String(50)),
    Column("tenant_id", String(64)),  # NULL = shared by every tenant (built-ins)
    Column("updated_at", DateTime),
)

# --------------------------------------------------------------------------- versions
workflow_versions = Table(
    "workflow_versions", metadata,
    Column("id", Integer, primary_key=True),
    Column("workflow_id", Integer, ForeignKey("workflow_definitions.id"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("definition", JSON, nullable=False),
    Column("source", Text),
    Column("checksum", String(64), nullable=False),
    Column("created_by", String(100)),
    Column("created_at", DateTime, server_default=NOW),
    Column("comment", Text),
    UniqueConstraint("workflow_id", "version", name="uq_workflow_versions_workflow_version"),
)

# --------------------------------------------------------------------------- core: workflow steps
workflow_steps = Table(
    "workflow_steps", metadata,
    Column("id", Integer, primary_key=True),
    Column("workflow_id", Integer, ForeignKey("workflow_definitions.id"), nullable=False),
    Column("step_number", Integer),
    Column("step_name", String(100)),
    Column("step_type", String(50)),
    Column("action", String(100)),
    Column("parameters", Text),
    Column("required_inputs", Text),
    Column("expected_outputs", Text),
    Column("timeout_seconds", Integer, server_default=text("300")),
    Column("on_failure", String(50), server_default=text("'stop'")),
    # additions
    Column("version", Integer, server_default=text("1")),
    Column("condition", Text),
    Column("needs", Text),
    Column("retry_count", Integer),
    Index("ix_workflow_steps_workflow_version", "workflow_id", "version", "step_number"),
)

# --------------------------------------------------------------------------- core: workflow jobs
workflow_jobs = Table(
    "workflow_jobs", metadata,
    Column("id", Integer, primary_key=True),
    Column("job_code", String(50), nullable=False, unique=True),
    Column("workflow_id", Integer, ForeignKey("workflow_definitions.id"), nullable=False),
    Column("input_file_path", Text),
    Column("input_metadata", Text),
    Column("output_file_path", Text),
    Column("output_metadata", Text),
    Column("priority", Integer, server_default=text("5")),
    Column("status", String(50), server_default=text("'pending'")),
    Column("current_step", Integer, server_default=text("0")),
    Column("progress_percent", Numeric(5, 2), server_default=text("0")),
    Column("started_at", DateTime),
    Column("completed_at", DateTime),  # completed or partial only
    Column("error_message", Text),
    Column("retry_count", Integer, server_default=text("0")),
    Column("submitted_by", String(100)),
    Column("submitted_at", DateTime, server_default=NOW),
    # additions
    Column("tenant_id", String(64), server_default=text("'default'")),
    Column("workflow_version", Integer),
    Column("queue_name", String(50)),
    Column("input_key", String(512)),
    Column("input_mime", String(100)),
    Column("input_size", BigInteger),
    Column("input_filename", String(255)),
    Column("input_url", Text),
    Column("params", JSON),
    Column("job_metadata", JSON),
    Column("notify", JSON),
    Column("error_class", String(30)),
    Column("request_id", String(64)),
    Column("idempotency_key", String(200)),
    Column("idempotency_hash", String(64)),
    Column("cancel_requested", Boolean, server_default=text("FALSE")),
    Column("rescue_count", Integer, server_default=text("0")),
    Column("deadline_at", DateTime),
    Column("updated_at", DateTime),
    Column("shadow_of", Integer),  # a shadow run: the id of the primary job it mirrors
    Column("run_number", Integer, server_default=text("1")),
    Column("finished_at", DateTime),  # any terminal state: completed, partial, failed, cancelled
    Column("routing", JSON),  # how a job submitted without a workflow was routed
    Column("rerun", JSON),  # {"run": N, "steps": [...]}: the steps a reprocess run re-executes
    Column("deliver", JSON),  # a per-job override of the workflow's ``deliver:``
    Index("ix_workflow_jobs_status_priority", "status", "priority"),
    Index("ix_workflow_jobs_tenant_id_desc", "tenant_id", "id"),
    Index("ix_workflow_jobs_workflow_status", "workflow_id", "status"),
    # completed_at, finished_at, idempotency_key and shadow_of are NULL on most rows, or until a job ends: partial,
    # their indexes cost no entry when such a row is inserted or updated (and a job's row changes status three
    # times, each change a new entry in every index)
    Index("ix_workflow_jobs_completed_at", "completed_at", sqlite_where=text("completed_at IS NOT NULL"),
          postgresql_where=text("completed_at IS NOT NULL")),
    # cover a window's figures (the overview, /v1/analytics/summary, alert rules): read from the index alone
    Index("ix_workflow_jobs_finished_at", "finished_at", "tenant_id", "status", "shadow_of", "started_at",
          sqlite_where=text("finished_at IS NOT NULL"), postgresql_where=text("finished_at IS NOT NULL")),
    Index("ix_workflow_jobs_submitted_at", "submitted_at", "tenant_id", "shadow_of"),
    Index("uq_workflow_jobs_idempotency", "tenant_id", "idempotency_key", unique=True,
          sqlite_where=text("idempotency_key IS NOT NULL"), postgresql_where=text("idempotency_key IS NOT NULL")),
    Index("ix_workflow_jobs_shadow_of", "shadow_of", sqlite_where=text("shadow_of IS NOT NULL"),
          postgresql_where=text("shadow_of IS NOT NULL")),
    Index("ix_workflow_jobs_input_key", "input_key"),  # who else shares an input (retention)
)

# --------------------------------------------------------------------------- core: step executions
step_executions = Table(
    "step_executions", metadata,
    Column("id", Integer, primary_key=True),
    Column("job_id", Integer, ForeignKey("workflow_jobs.id"), nullable=False),
    Column("step_id", Integer, ForeignKey("workflow_steps.id"), nullable=False),
    Column("status", String(50), server_default=text("'pending'")),
    Column("input_data", Text),
    Column("output_data", Text),
    Column("started_at", DateTime),
    Column("completed_at", DateTime),
    Column("duration_seconds", Integer),
    Column("error_message", Text),
    Column("retry_attempt", Integer, server_default=text("0")),
    # additions
    Column("action", String(100)),
    Column("step_name", String(100)),
    Column("duration_ms", Integer),
    Column("error_class", String(30)),
    Column("stderr_tail", Text),
    Column("worker_id", String(100)),
    Column("progress_percent", Float),
    Column("run_number", Integer, server_default=text("1")),
    Index("ix_step_executions_job", "job_id", "step_id"),
    Index("ix_step_executions_action_completed", "action", "completed_at"),
)

# --------------------------------------------------------------------------- core: the media queue
media_queue = Table(
    "media_queue", metadata,
    Column("id", Integer, primary_key=True),
    Column("job_id", Integer, ForeignKey("workflow_jobs.id"), nullable=False),
    Column("queue_name", String(50)),
    Column("priority", Integer, server_default=text("5")),
    Column("scheduled_time", DateTime),
    Column("picked_up_at", DateTime),
    Column("worker_id", String(100)),  # the owner of the claim
    Column("status", String(50), server_default=text("'queued'")),
    Column("created_at", DateTime, server_default=NOW),
    # additions
    Column("lease_expires_at", DateTime),
    Column("attempts", Integer, server_default=text("0")),
    Column("base_priority", Integer),
    Column("aged_at", DateTime),
    Column("wait_reason", String(50)),
    Index("ix_media_queue_lease", "lease_expires_at",
          sqlite_where=text("status = 'processing'"), postgresql_where=text("status = 'processing'")),
    Index("ix_media_queue_job", "job_id", unique=True),
)

# claims read the best queued entry of a queue: priority first (higher = sooner), then age
Index("ix_media_queue_claim", media_queue.c.queue_name, media_queue.c.priority.desc(),
      media_queue.c.scheduled_time, media_queue.c.id,
      sqlite_where=text("status = 'queued'"), postgresql_where=text("status = 'queued'"))

# Sub-tasks of a chunked (``parallel:``) transcode: one row per video segment plus one for the audio track.
# Claimed, leased, fenced and retried like queue entries, by any worker serving the job's queue, while the
# job itself waits in the queue (parked, ``wait_reason = 'segments'``) until the last one finishes.
step_segments = Table(
    "step_segments", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("job_id", Integer, ForeignKey("workflow_jobs.id"), nullable=False),
    Column("tenant_id", String(64)),
    Column("step_name", String(100), nullable=False),  # the first step of the (fused) unit
    Column("run_number", Integer, server_default=text("1")),
    Column("kind", String(10), nullable=False),  # video | audio
    Column("seq", Integer, nullable=False),
    Column("spec", JSON),  # the segment: first frame, frames, start, end
    Column("task", JSON),  # what to encode: source key, steps' params, timeout
    Column("queue_name", String(50)),
    Column("priority", Integer, server_default=text("5")),
    Column("status", String(20), nullable=False, server_default=text("'queued'")),
    Column("scheduled_time", DateTime),
    Column("worker_id", String(100)),  # the owner of the claim
    Column("lease_expires_at", DateTime),
    Column("attempts", Integer, server_default=text("0")),
    Column("max_attempts", Integer, server_default=text("1")),
    Column("output_keys", JSON),
    Column("error_class", String(30)),
    Column("error_message", Text),
    Column("created_at", DateTime, server_default=NOW),
    Column("started_at", DateTime),
    Column("completed_at", DateTime),
    Column("duration_ms", Integer),
    Index("ix_step_segments_job", "job_id", "step_name", "run_number"),
    Index("ix_step_segments_claim", "queue_name", "priority", "scheduled_time",
          sqlite_where=text("status = 'queued'"), postgresql_where=text("status = 'queued'")),
    Index("ix_step_segments_lease", "lease_expires_at",
          sqlite_where=text("status = 'processing'"), postgresql_where=text("status = 'processing'")),
)

queues = Table(
    "queues", metadata,
    Column("name", String(50), primary_key=True),
    Column("paused", Boolean, nullable=False, server_default=text("FALSE")),
    Column("updated_at", DateTime),
)

workers = Table(
    "workers", metadata,
    Column("id", String(100), primary_key=True),
    Column("hostname", String(200)),
    Column("pid", Integer),
    Column("pools", JSON),
    Column("status", String(20), server_default=text("'running'")),
    Column("started_at", DateTime, server_default=NOW),
    Column("heartbeat_at", DateTime),
    Column("jobs_done", BigInteger, server_default=text("0")),
    Column("version", String(20)),
)

# --------------------------------------------------------------------------- core: job notifications
workflow_notifications = Table(
    "workflow_notifications", metadata,
    Column("id", Integer, primary_key=True),
    Column("job_id", Integer, ForeignKey("workflow_jobs.id")),  # NULL for breaker/alert events
    Column("notification_type", String(50)),
    Column("recipient", String(200)),
    Column("channel", String(50)),
    Column("subject", String(300)),
    Column("message", Text),
    Column("status", String(50), server_default=text("'pending'")),
    Column("sent_at", DateTime),
    Column("error_message", Text),
    Column("created_at", DateTime, server_default=NOW),
    # additions
    Column("tenant_id", String(64), server_default=text("'default'")),
    Column("event_id", String(64)),
    Column("event_type", String(50)),
    Column("channel_id", Integer),
    Column("payload", JSON),
    Column("attempts", Integer, server_default=text("0")),
    Column("next_attempt_at", DateTime),
    Column("locked_by", String(100)),
    Column("locked_until", DateTime),
    Column("attempt_log", JSON),
    Index("ix_workflow_notifications_pending", "next_attempt_at",
          sqlite_where=text("status = 'pending'"), postgresql_where=text("status = 'pending'")),
)

notification_channels = Table(
    "notification_channels", metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant_id", String(64), nullable=False, server_default=text("'default'")),
    Column("workflow_code", String(50)),
    Column("kind", String(20), nullable=False),  # webhook | email | slack
    Column("name", String(200)),
    Column("config", JSON, nullable=False),
    Column("events", JSON),  # list of event types; NULL = all
    Column("enabled", Boolean, nullable=False, server_default=text("TRUE")),
    Column("disabled_reason", Text),
    Column("created_at", DateTime, server_default=NOW),
)

# --------------------------------------------------------------------------- outputs / events
job_outputs = Table(
    "job_outputs", metadata,
    Column("id", Integer, primary_key=True),
    Column("job_id", Integer, ForeignKey("workflow_jobs.id"), nullable=False),
    Column("step_execution_id", Integer),
    Column("step_name", String(100)),
    Column("tenant_id", String(64), server_default=text("'default'")),
    Column("name", String(200), nullable=False),
    Column("storage_key", String(512), nullable=False),
    Column("mime_type", String(100)),
    Column("bytes", BigInteger),
    Column("checksum", String(64)),
    Column("metadata", JSON),
    Column("visible", Boolean, server_default=text("TRUE")),
    Column("created_at", DateTime, server_default=NOW),
    Column("delivered_url", Text),  # where the workflow's ``deliver:`` step put it
    Column("delivered_at", DateTime),
    UniqueConstraint("job_id", "name", name="uq_job_outputs_job_name"),
)

job_events = Table(
    "job_events", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("job_id", Integer, nullable=True),
    Column("tenant_id", String(64), server_default=text("'default'")),
    Column("event_type", String(30), nullable=False),  # status | step | progress | decision | retry | …
    Column("step_name", String(100)),
    Column("data", JSON),
    Column("created_at", DateTime, server_default=NOW),
    Index("ix_job_events_job", "job_id", "id"),
    Index("ix_job_events_tenant", "tenant_id", "id"),
)

dead_letters = Table(
    "dead_letters", metadata,
    Column("id", Integer, primary_key=True),
    Column("job_id", Integer, ForeignKey("workflow_jobs.id"), nullable=False),
    Column("tenant_id", String(64), server_default=text("'default'")),
    Column("workflow_code", String(50)),
    Column("workflow_version", Integer),
    Column("failed_step", String(100)),
    Column("error_class", String(30)),
    Column("error_message", Text),
    Column("stderr_tail", Text),
    Column("attempts", JSON),
    Column("input_key", String(512)),
    Column("created_at", DateTime, server_default=NOW),
    Column("resolved_at", DateTime),
    Column("resolution", String(30)),  # retried | discarded
    Column("resolved_by", String(100)),
    Index("ix_dead_letters_open", "error_class", "created_at",
          sqlite_where=text("resolved_at IS NULL"), postgresql_where=text("resolved_at IS NULL")),
)

circuit_breakers = Table(
    "circuit_breakers", metadata,
    Column("action", String(100), primary_key=True),
    Column("state", String(20), nullable=False, server_default=text("'closed'")),
    Column("failure_count", Integer, server_default=text("0")),
    Column("success_count", Integer, server_default=text("0")),
    Column("opened_at", DateTime),
    Column("next_probe_at", DateTime),
    Column("probe_job_id", Integer),
    Column("updated_at", DateTime),
    Column("last_error", Text),
)

upload_sessions = Table(
    "upload_sessions", metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant_id", String(64), nullable=False, server_default=text("'default'")),
    Column("upload_length", BigInteger),  # NULL while deferred
    Column("upload_offset", BigInteger, nullable=False, server_default=text("0")),
    Column("metadata", JSON),
    Column("storage_key", String(512)),
    Column("filename", String(255)),
    Column("created_by", String(100)),
    Column("created_at", DateTime, server_default=NOW),
    Column("expires_at", DateTime),
    Column("completed_at", DateTime),
    Column("job_id", Integer),
    # the PATCH writing the part file now (any API process): its token and lease
    Column("patch_token", String(64)),
    Column("patch_until", DateTime),
    # where the unfinished bytes are, so any API replica can continue them (mediamill.api.tusparts)
    Column("part_state", JSON),
    Index("ix_upload_sessions_storage_key", "storage_key"),
)

routing_rules = Table(
    "routing_rules", metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant_id", String(64)),
    Column("position", Integer, nullable=False, server_default=text("0")),
    Column("condition", Text, nullable=False),
    Column("workflow_code", String(50), nullable=False),
    Column("enabled", Boolean, server_default=text("TRUE")),
    Column("created_at", DateTime, server_default=NOW),
    Column("name", String(200)),
    Column("version", Integer),  # pin: route to this version instead of the current one
    Column("created_by", String(100)),
    Column("updated_at", DateTime),
    Index("ix_routing_rules_tenant_position", "tenant_id", "position"),
)

# a staged rollout (kind canary) or a shadow run (kind shadow) of a candidate version, per tenant
workflow_rollouts = Table(
    "workflow_rollouts", metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant_id", String(64), nullable=False, server_default=text("'default'")),
    Column("workflow_id", Integer, ForeignKey("workflow_definitions.id"), nullable=False),
    Column("kind", String(10), nullable=False),  # canary | shadow
    Column("version", Integer, nullable=False),  # the candidate
    Column("base_version", Integer),  # the version active when it started
    Column("percent", Float, nullable=False),
    Column("guard", JSON),  # canary: {"max_failure_delta", "min_jobs"}
    Column("state", String(20), nullable=False, server_default=text("'active'")),  # active|promoted|aborted|stopped
    Column("created_by", String(100)),
    Column("started_at", DateTime),
    Column("ended_at", DateTime),
    Column("end_reason", Text),
    Index("ix_workflow_rollouts_live", "workflow_id", "kind", "state"),
)

alert_rules = Table(
    "alert_rules", metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant_id", String(64)),
    Column("name", String(200), nullable=False, unique=True),
    Column("kind", String(40), nullable=False),
    Column("params", JSON),
    Column("severity", String(4), nullable=False, server_default=text("'P2'")),
    Column("for_seconds", Integer, nullable=False, server_default=text("300")),
    Column("runbook", Text),
    Column("enabled", Boolean, server_default=text("TRUE")),
    Column("created_at", DateTime, server_default=NOW),
)

alerts = Table(
    "alerts", metadata,
    Column("id", Integer, primary_key=True),
    Column("rule_name", String(200), nullable=False),
    Column("labels", JSON),
    Column("label_key", String(300), nullable=False, server_default=text("''")),
    Column("severity", String(4)),
    Column("state", String(20), nullable=False),  # pending | firing | resolved
    Column("value", Float),
    Column("summary", Text),
    Column("pending_since", DateTime),
    Column("fired_at", DateTime),
    Column("resolved_at", DateTime),
    Column("updated_at", DateTime),
    Index("ix_alerts_rule_state", "rule_name", "label_key", "state"),
)

# --------------------------------------------------------------------------- sources (watch folders, buckets)
sources = Table(
    "sources", metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant_id", String(64), nullable=False, server_default=text("'default'")),
    Column("name", String(100), nullable=False),
    Column("kind", String(10), nullable=False),  # folder | bucket
    Column("location", Text, nullable=False),  # a folder path, or s3://bucket/prefix
    Column("config", JSON, nullable=False),  # patterns, recursive, after, workflow, priority, metadata, limits
    Column("enabled", Boolean, nullable=False, server_default=text("TRUE")),
    Column("secret", String(100)),  # salt of the event secret (derived with the install key; never stored)
    Column("high_water", Text),  # the last key an incremental bucket listing finished
    Column("owner", String(100)),  # the process elected to run the source
    Column("lease_expires_at", DateTime),
    Column("last_scan_at", DateTime),
    Column("last_error", Text),
    Column("waiting_reason", String(100)),  # e.g. "backpressure" while the queue is over the limit
    Column("created_at", DateTime, server_default=NOW),
    Column("updated_at", DateTime),
    UniqueConstraint("tenant_id", "name", name="uq_sources_tenant_name"),
)

source_files = Table(
    "source_files", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("source_id", Integer, ForeignKey("sources.id", ondelete="CASCADE"), nullable=False),
    Column("tenant_id", String(64), nullable=False, server_default=text("'default'")),
    Column("path", Text, nullable=False),  # relative to the folder, or the object key
    Column("fingerprint", String(200), nullable=False),  # size + mtime (folder) or ETag (bucket)
    Column("size", BigInteger),
    Column("etag", String(200)),
    Column("mtime", Float),
    Column("content_hash", String(64)),
    # pending → claimed → submitted → done | failed;  skipped (unreadable / refused, never retried)
    Column("status", String(20), nullable=False, server_default=text("'pending'")),
    Column("origin", String(10)),  # scan | listing | event
    Column("claimed_by", String(100)),
    Column("claimed_at", DateTime),
    Column("job_id", Integer),
    Column("error", Text),
    Column("after_done", String(20)),  # what the after-action did: kept | moved | deleted | error
    Column("first_seen_at", DateTime, server_default=NOW),
    Column("taken_at", DateTime),
    Column("finished_at", DateTime),
    UniqueConstraint("source_id", "path", "fingerprint", name="uq_source_files_identity"),
    Index("ix_source_files_source_status", "source_id", "status", "id"),
)
