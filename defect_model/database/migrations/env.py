"""Alembic's environment, run by defect_model.database.migrate (configured in code: no alembic.ini). The
connection comes in `config.attributes["connection"]`, already in the transaction the upgrade runs in."""

from alembic import context

from defect_model.database.schema import metadata


def run_migrations() -> None:
    connection = context.config.attributes["connection"]
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True,
                      transaction_per_migration=False)
    with context.begin_transaction():
        context.run_migrations()


# Alembic runs this file inside its environment; an import from anywhere else (a tool walking the package)
# only defines the function.
if getattr(context, "_proxy", None) is not None:
    run_migrations()
