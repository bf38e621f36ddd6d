"""Unit tests of engine."""
