"""Bulk stamping: durable background jobs (use cases in `service`, the worker in `worker`)."""
