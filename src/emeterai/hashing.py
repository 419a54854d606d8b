"""Argon2 hashers: one for what people choose, one for what we generate.

A password has little entropy, so its hash must be slow (argon2-cffi's defaults, about
50-170 ms here). An API token or channel key carries 256 random bits: no amount of
guessing finds it, so its hash only has to keep the database from holding it in clear.
A light Argon2 (1 MiB, one pass: about 0.4 ms here, against 3.4 ms at 8 MiB) keeps
authentication from costing more CPU than the stamping it guards. Under a rush each
applicant's token is verified once in every server process it reaches (see
`TokenVerifier`), and `emeterai bench spike` showed 8 MiB costing a worker 4 ms of every
applicant's ~56 ms. A hash stores its own parameters, so tokens issued with the older,
heavier ones still verify (at their old cost).
"""

from __future__ import annotations

from argon2 import PasswordHasher

PASSWORD_HASHER = PasswordHasher()
GENERATED_SECRET_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
