"""Unit tests of wire."""
