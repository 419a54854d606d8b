"""Stamping: DESIGN.md flow 2. The workflow is in `service`, the signer seam in `signing`."""
