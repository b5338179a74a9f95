"""Grafana alerting as code: the files under alerting/, their lint, replay and rendering."""
