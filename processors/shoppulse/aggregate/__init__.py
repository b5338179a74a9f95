"""The aggregation processor: clean events -> windowed store metrics, payments, sessions, late events."""
