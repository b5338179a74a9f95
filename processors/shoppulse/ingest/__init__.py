"""The ingestion processor: raw events -> validated, de-duplicated, PII-free clean events + dead letters."""
