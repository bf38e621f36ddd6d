"""Unit tests of connectors."""
