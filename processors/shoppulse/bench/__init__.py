"""Benchmarks: throughput and latency measured side by side in one run, never asserted in tests."""
