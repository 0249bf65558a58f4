"""The one SQL layer: where the database is (PostgreSQL from $DEFECT_DATABASE_URL, else the SQLite file of
`common.places.default_db_path()`), its schema (SQLAlchemy Core tables), its migrations (Alembic, shipped in
`migrations/`), and every statement the engine runs, by area. Nothing else in the project imports sqlalchemy,
sqlite3 or psycopg; callers catch `DatabaseError`."""

from defect_model.database.engine import (URL_ENV, Database, DatabaseError, DatabaseNotReady, location, open_as_is,
                                          shown_url)
from defect_model.database.opening import close_all, open_database

__all__ = ["URL_ENV", "Database", "DatabaseError", "DatabaseNotReady", "close_all", "location", "open_as_is",
           "open_database", "shown_url"]
