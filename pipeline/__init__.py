"""log-hindsight: keep every log line briefly in Kafka, store the context around incidents."""

__version__ = "0.1.0"
