"""The migrations build exactly the schema the models declare, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from emeterai.admission.store import admission_metadata
from emeterai.db import make_engine
from emeterai.migrate import alembic_config, upgrade_database
from emeterai.models import metadata


def test_one_head() -> None:
    heads = ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()
    assert len(heads) == 1, heads


def test_migrated_schema_matches_the_models(database_url: str) -> None:
    upgrade_database(database_url)
    upgrade_database(database_url)  # idempotent
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, [metadata, admission_metadata])  # type: ignore[arg-type]
    finally:
        engine.dispose()
    assert differences == []
