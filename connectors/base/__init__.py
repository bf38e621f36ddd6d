"""What every sink shares: the sink protocol and capabilities, the batching runner, routing and redaction."""
