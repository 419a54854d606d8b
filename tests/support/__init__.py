"""Test helpers shared across the suite: sample PDFs and the external checks."""
