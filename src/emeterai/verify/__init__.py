"""Verification: DESIGN.md flow 3. The use case is in `service`."""
