"""Grafana dashboards as code: lint, export, push, preview."""
