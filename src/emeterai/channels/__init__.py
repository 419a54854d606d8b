"""Sales channels: the issuer's shop, distributors and resellers selling quota.

- `management`: create channels, rotate their secrets, deposits, credit limits, stock;
- `orders`: orders and their timeline; `payments`: signed confirmations, credited exactly
  once; `reconciliation`: settlement files against the ledger; `refunds`; `reports`;
- `sandbox`: a payment provider simulator for demos and integration tests;
- `keys` (API keys, encrypted webhook secrets) and `signing` (the webhook HMAC).

Money moves on the rupiah ledger and quota on the quota ledger, both with idempotency
keys derived from the order or the payment reference. Modules stay light on import.
"""
