"""The ingest stage: logs.raw in any shape and with any key -> canonical lines re-keyed by session on
logs.sessions, in batches; stateless, scaled out by consumer group (confluent-kafka)."""
