"""The event contract: schema models, validation, PII hashing, currency conversion."""
