"""As-code tooling: dashboards and alert rules kept as reviewed files in Git — lint, replay, preview,
export and push. Never imported by the runtime."""
