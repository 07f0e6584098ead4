"""Alembic environment: migrations run on the connection `surd.review.db.connect` passes in."""

from alembic import context

from surd.review.schema import meta

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=meta, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
