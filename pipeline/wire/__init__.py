"""Wire formats: raw and curated codecs, schema registry, OTLP mapping, dead-letter headers."""
