"""Rules operators inject at runtime: the model, the compiled set, the rules topic, the level poller."""
