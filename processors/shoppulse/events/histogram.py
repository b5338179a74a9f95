"""A log-bucket latency histogram: mergeable by adding counts, percentiles within 5 % (bucket width 10 %)."""

from __future__ import annotations

import math

BUCKET_BASE = 1.1
_LOG_BASE = math.log(BUCKET_BASE)


def bucket(latency_ms: float) -> int:
    """Bucket b holds [1.1^b, 1.1^(b+1)) ms; latencies under 1 ms share bucket 0."""
    return 0 if latency_ms < 1 else int(math.log(latency_ms) / _LOG_BASE)


def quantile(counts: dict[int, int], q: float) -> float:
    """The q-quantile (0-1) read from bucket counts, at the bucket's geometric middle."""
    total = sum(counts.values())
    if total == 0:
        return math.nan
    running = 0
    for key in sorted(counts):
        running += counts[key]
        if running >= q * total:
            return BUCKET_BASE ** (key + 0.5)
    return BUCKET_BASE ** (max(counts) + 0.5)  # pragma: no cover - unreachable for q <= 1
