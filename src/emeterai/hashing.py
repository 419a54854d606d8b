"""Argon2 hashers: one for what people choose, one for what we generate.

A password has little entropy, so its hash must be slow (argon2-cffi's defaults, about
50-170 ms here). An API token or channel key carries 256 random bits: no amount of
guessing finds it, so its hash only has to keep the database from holding it in clear,
and a light Argon2 (about 4 ms) keeps authentication from costing more CPU than the
stamping it guards (measured by `emeterai bench spike`).
"""

from __future__ import annotations

from argon2 import PasswordHasher

PASSWORD_HASHER = PasswordHasher()
GENERATED_SECRET_HASHER = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)
