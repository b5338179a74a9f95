"""Writing to ClickHouse: the schema migrations and (later) the batching sink."""
