"""Alembic environment: migrations run on the connection JobStore.migrate() hands over (or on sqlalchemy.url)."""

from alembic import context
from sqlalchemy import create_engine

from tunereel.composer.store import metadata

config = context.config
connection = config.attributes.get("connection")

if connection is not None:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    with create_engine(config.get_main_option("sqlalchemy.url")).connect() as own:
        context.configure(connection=own, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
