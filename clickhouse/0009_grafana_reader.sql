-- grafana_reader: role and settings profile of Grafana's read-only ClickHouse user (SELECT on this database only); `shoppulse db migrate` creates the user itself from CLICKHOUSE_GRAFANA_USER/PASSWORD.
-- Access statements need writable access storage: on the embedded engine, which has none, the runner skips them and the local endpoint enforces the reader itself.
CREATE SETTINGS PROFILE IF NOT EXISTS grafana_reader SETTINGS readonly = 1, max_execution_time = 60 CHANGEABLE_IN_READONLY;
CREATE ROLE IF NOT EXISTS grafana_reader SETTINGS PROFILE 'grafana_reader';
GRANT SELECT ON * TO grafana_reader;
