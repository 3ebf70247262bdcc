#!/bin/bash
# Least privilege for the compose stack (docker-compose.yml mounts this directory as the
# ClickHouse image's /docker-entrypoint-initdb.d; it runs once, on the first start, as the
# administrator CLICKHOUSE_USER, which only `funnel migrate` (and an operator's `funnel
# forget` / `funnel reprocess`) uses):
#   * the writer (CLICKHOUSE_WRITER_USER): what the sink does, reading and inserting rows of the
#     funnel database, nothing else (no DDL, no deletes);
#   * the reader (CLICKHOUSE_READER_USER): Grafana and analysts, SELECT on the funnel database,
#     with readonly=2 (may set query settings, never write).
# The passwords come from the container's environment (.env), stored as SHA-256 by
# ClickHouse; none is written here.
set -euo pipefail

clickhouse client --user "$CLICKHOUSE_USER" --password "$CLICKHOUSE_PASSWORD" --multiquery \
  --param_writer="$CLICKHOUSE_WRITER_USER" --param_writer_password="$CLICKHOUSE_WRITER_PASSWORD" \
  --param_reader="$CLICKHOUSE_READER_USER" --param_reader_password="$CLICKHOUSE_READER_PASSWORD" <<'SQL'
CREATE DATABASE IF NOT EXISTS funnel;
CREATE SETTINGS PROFILE IF NOT EXISTS funnel_read_only SETTINGS readonly = 2;
CREATE USER IF NOT EXISTS {writer:Identifier}
    IDENTIFIED WITH sha256_password BY {writer_password:String};
CREATE USER IF NOT EXISTS {reader:Identifier}
    IDENTIFIED WITH sha256_password BY {reader_password:String}
    SETTINGS PROFILE 'funnel_read_only';
GRANT SELECT, INSERT ON funnel.* TO {writer:Identifier};
GRANT SELECT ON funnel.* TO {reader:Identifier};
SQL
