"""Edges: server-rendered pages."""
