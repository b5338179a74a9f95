"""Automated actions with guardrails: policies, decisions, the audit trail."""
