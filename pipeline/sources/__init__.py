"""Getting lines into logs.raw from applications: the publisher, logging integrations, per-request context."""
