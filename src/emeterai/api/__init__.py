"""Edges: HTTP API."""
