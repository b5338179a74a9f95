"""The Grafana model shoppulse checks dashboards and alert rules against: the dashboard JSON model and
Grafana's provisioned datasources, query expansion as Grafana and its ClickHouse plugin do it, result
shapes a panel can draw, and PromQL checked with promtool. Shared by the dashboards and alerting tooling."""
