"""Ordered, named schema migrations, recorded in ``_migrations``.

Timestamps are integer Unix milliseconds; JSON is stored as TEXT/BLOB. Append new
steps at the end; never edit one that has shipped.
"""

from __future__ import annotations

MIGRATIONS: list[tuple[str, str]] = [
    (
        "0001_routes",
        """
        CREATE TABLE routes (
            id INTEGER PRIMARY KEY,
            ts_ms INTEGER NOT NULL,
            request_id TEXT NOT NULL,
            key_name TEXT,
            endpoint TEXT NOT NULL,
            model TEXT,
            provider TEXT,
            lane TEXT NOT NULL,
            reason TEXT NOT NULL,
            status INTEGER NOT NULL,
            error_code TEXT,
            stream INTEGER NOT NULL DEFAULT 0,
            latency_ms REAL,
            upstream_ms REAL,
            attempts INTEGER NOT NULL DEFAULT 1,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            cached_tokens INTEGER,
            reasoning_tokens INTEGER,
            cost_usd REAL,
            baseline_usd REAL,
            saved_usd REAL,
            ticket_id TEXT,
            cache_name TEXT
        );
        CREATE INDEX routes_ts ON routes(ts_ms);
        CREATE INDEX routes_key_ts ON routes(key_name, ts_ms);
        """,
    ),
    (
        "0002_tickets_batches",
        """
        CREATE TABLE batches (
            id TEXT PRIMARY KEY,
            provider TEXT NOT NULL,
            model TEXT NOT NULL,
            endpoint TEXT NOT NULL,
            status TEXT NOT NULL,
            provider_batch_id TEXT UNIQUE,
            input_file_id TEXT,
            output_file_id TEXT,
            error_file_id TEXT,
            line_count INTEGER NOT NULL DEFAULT 0,
            bytes INTEGER NOT NULL DEFAULT 0,
            est_tokens INTEGER NOT NULL DEFAULT 0,
            completed_lines INTEGER NOT NULL DEFAULT 0,
            failed_lines INTEGER NOT NULL DEFAULT 0,
            errors TEXT,
            created_ms INTEGER NOT NULL,
            submitted_ms INTEGER,
            finished_ms INTEGER,
            next_poll_ms INTEGER,
            poll_failures INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX batches_status ON batches(status);

        CREATE TABLE tickets (
            id TEXT PRIMARY KEY,
            key_name TEXT NOT NULL,
            request_id TEXT NOT NULL DEFAULT '',
            idempotency_key TEXT,
            endpoint TEXT NOT NULL,
            model TEXT NOT NULL,
            provider TEXT NOT NULL,
            upstream_model TEXT NOT NULL,
            lane TEXT NOT NULL,
            reason TEXT NOT NULL,
            status TEXT NOT NULL,
            body_bytes INTEGER NOT NULL DEFAULT 0,
            est_tokens INTEGER NOT NULL DEFAULT 0,
            units INTEGER NOT NULL DEFAULT 1,
            created_ms INTEGER NOT NULL,
            deadline_ms INTEGER NOT NULL,
            not_before_ms INTEGER NOT NULL DEFAULT 0,
            updated_ms INTEGER NOT NULL,
            finished_ms INTEGER,
            attempts INTEGER NOT NULL DEFAULT 0,
            batch_id TEXT REFERENCES batches(id),
            callback_url TEXT,
            error TEXT,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            cached_tokens INTEGER,
            cost_usd REAL,
            baseline_usd REAL,
            saved_usd REAL,
            UNIQUE (key_name, idempotency_key)
        );
        CREATE INDEX tickets_status_group
            ON tickets(status, lane, provider, upstream_model, endpoint, deadline_ms);
        CREATE INDEX tickets_status_deadline ON tickets(status, deadline_ms);
        CREATE INDEX tickets_key_created ON tickets(key_name, created_ms, id);
        CREATE INDEX tickets_batch ON tickets(batch_id, id);

        -- Request bodies and results live apart from the ticket rows, so that status
        -- changes rewrite small rows instead of kilobytes of JSON per ticket.
        CREATE TABLE ticket_bodies (
            ticket_id TEXT PRIMARY KEY,
            body BLOB NOT NULL
        );
        CREATE TABLE ticket_results (
            ticket_id TEXT PRIMARY KEY,
            result BLOB NOT NULL
        );

        CREATE TABLE ticket_events (
            id INTEGER PRIMARY KEY,
            ticket_id TEXT NOT NULL,
            ts_ms INTEGER NOT NULL,
            from_status TEXT,
            to_status TEXT NOT NULL,
            detail TEXT
        );
        CREATE INDEX ticket_events_ticket ON ticket_events(ticket_id);

        CREATE TABLE webhooks (
            id INTEGER PRIMARY KEY,
            ticket_id TEXT NOT NULL UNIQUE,
            url TEXT NOT NULL,
            status TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_ms INTEGER NOT NULL,
            last_error TEXT,
            updated_ms INTEGER NOT NULL
        );
        CREATE INDEX webhooks_due ON webhooks(status, next_attempt_ms);
        """,
    ),
    (
        "0003_gemini_caches",
        """
        CREATE TABLE gemini_caches (
            name TEXT PRIMARY KEY,
            fingerprint TEXT NOT NULL,
            model TEXT NOT NULL,
            credential TEXT NOT NULL,
            token_count INTEGER NOT NULL,
            created_ms INTEGER NOT NULL,
            expire_ms INTEGER NOT NULL,
            last_used_ms INTEGER NOT NULL,
            hits INTEGER NOT NULL DEFAULT 0,
            status TEXT NOT NULL
        );
        CREATE INDEX gemini_caches_lookup ON gemini_caches(fingerprint, model, credential, status);

        CREATE TABLE gemini_prefix_seen (
            fingerprint TEXT NOT NULL,
            model TEXT NOT NULL,
            credential TEXT NOT NULL,
            ts_ms INTEGER NOT NULL,
            too_small INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX gemini_prefix_seen_lookup
            ON gemini_prefix_seen(fingerprint, model, credential, ts_ms);
        CREATE INDEX gemini_prefix_seen_ts ON gemini_prefix_seen(ts_ms);
        """,
    ),
    (
        "0004_admin_listing_indexes",
        """
        CREATE INDEX tickets_created ON tickets(created_ms, id);
        CREATE INDEX batches_created ON batches(created_ms, id);
        """,
    ),
    (
        # Only queued batch-lane tickets are ever looked up by group (claim and
        # queued_groups name both terms literally, so SQLite can use the partial
        # index). Indexing every ticket by status made each later status change (the
        # 50,000 submitted -> completed updates of an ingest) delete and re-insert a
        # six-column key; now rows leave this index once, when they are claimed.
        "0005_queued_group_index",
        """
        DROP INDEX tickets_status_group;
        CREATE INDEX tickets_queued_group
            ON tickets(provider, upstream_model, endpoint, deadline_ms, created_ms)
            WHERE status = 'queued' AND lane = 'batch';
        """,
    ),
    (
        # Which key and provider created each Responses API id passed through to a
        # provider, so GET/cancel/DELETE/input_items go to the right provider and to no
        # other key; and which deferred responses (tickets) their owner deleted.
        "0006_response_owners",
        """
        CREATE TABLE response_owners (
            id TEXT PRIMARY KEY,
            key_name TEXT NOT NULL,
            provider TEXT NOT NULL,
            created_ms INTEGER NOT NULL
        );
        CREATE TABLE deleted_responses (
            id TEXT PRIMARY KEY,
            key_name TEXT NOT NULL,
            deleted_ms INTEGER NOT NULL
        );
        """,
    ),
    (
        # costroute's own Files and Batch API: uploaded and result files (bytes on disk,
        # under [files] dir), and user batches whose lines are ordinary tickets.
        "0007_user_files_batches",
        """
        CREATE TABLE files (
            id TEXT PRIMARY KEY,
            key_name TEXT NOT NULL,
            purpose TEXT NOT NULL,
            filename TEXT NOT NULL,
            bytes INTEGER NOT NULL,
            created_ms INTEGER NOT NULL,
            expires_ms INTEGER,
            deleted INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX files_owner ON files(key_name, created_ms);
        CREATE TABLE user_batches (
            id TEXT PRIMARY KEY,
            key_name TEXT NOT NULL,
            endpoint TEXT NOT NULL,
            model TEXT,
            input_file_id TEXT NOT NULL,
            completion_window TEXT NOT NULL,
            status TEXT NOT NULL,
            created_ms INTEGER NOT NULL,
            expires_ms INTEGER NOT NULL,
            times TEXT NOT NULL DEFAULT '{}',
            output_file_id TEXT,
            error_file_id TEXT,
            errors TEXT,
            metadata TEXT,
            output_expires_s INTEGER,
            total INTEGER NOT NULL DEFAULT 0,
            usage TEXT
        );
        CREATE INDEX user_batches_owner ON user_batches(key_name, created_ms);
        CREATE TABLE user_batch_lines (
            batch_id TEXT NOT NULL,
            line INTEGER NOT NULL,
            custom_id TEXT NOT NULL,
            ticket_id TEXT NOT NULL,
            PRIMARY KEY (batch_id, line)
        );
        CREATE INDEX user_batch_lines_ticket ON user_batch_lines(ticket_id);
        """,
    ),
    (
        "0008_routes_tolerance",
        """
        ALTER TABLE routes ADD COLUMN tolerance_s INTEGER;
        """,
    ),
]
