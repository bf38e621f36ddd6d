"""The Faust worker: a thin shell around the raw processor, with state rebuild after assignment."""
