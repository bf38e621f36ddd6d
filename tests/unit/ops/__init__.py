"""Unit tests of ops."""
