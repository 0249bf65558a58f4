"""The schema as it was when migrations began (December 2026), plus the watchers table.

On an empty database it creates every table. On a SQLite file written before migrations it completes what is
there, as the old `_prepare` code did on opening: a missing table is created, a missing column added (with the
value older rows read back with: audit.LATER_COLUMNS keeps rows hashed before it verified), a missing index made.
No row is rewritten, so every hash stays as it was.

The tables are written out here, not imported from schema.py: a revision is what the schema was at that
revision, and later revisions change it from there.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

DOUBLE = sa.Float(precision=53)


def _text(name, default="", **kw):
    server_default = None if default is None else sa.text("'" + default + "'")
    return sa.Column(name, sa.Text, nullable=False, server_default=server_default, **kw)


def _id():
    return sa.Column("id", sa.Integer, primary_key=True, autoincrement=True)


def tables(metadata: sa.MetaData) -> list[sa.Table]:
    chain = lambda: [_text("prev_hash"), _text("row_hash")]  # noqa: E731
    return [
        sa.Table("inspections", metadata, _id(),
                 _text("time", None), _text("inspector"), _text("file_name", None), _text("sha256", None),
                 _text("photo_path"), _text("run_id"), _text("predicted"), sa.Column("confidence", DOUBLE),
                 _text("probabilities", "{}"), _text("verdict", None), sa.Column("threshold", DOUBLE), _text("error"),
                 _text("model_sha256"), _text("source", "browser"), sa.Column("unfamiliar_score", DOUBLE),
                 _text("graph_sha256"), _text("photo_removed"), sa.Column("brightness", DOUBLE),
                 sa.Column("contrast", DOUBLE), sa.Column("width", sa.Integer), sa.Column("height", sa.Integer),
                 *chain(), sa.Index("inspections_time", "time"), sqlite_autoincrement=True),
        sa.Table("corrections", metadata, _id(),
                 _text("time", None), _text("who"), _text("source", None), _text("action", None), _text("dataset"),
                 _text("photo_path", None), _text("sha256"), _text("model_label"), _text("original_label"),
                 sa.Column("new_label", sa.Text), _text("run_id"), sa.Column("inspection_id", sa.Integer),
                 _text("status", "pending"), _text("decided_by"), _text("decided_at"), _text("note"),
                 sqlite_autoincrement=True),
        sa.Table("audit", metadata, _id(),
                 _text("time", None), _text("actor", None), _text("role"), _text("action", None), _text("target"),
                 _text("detail", "{}"), *chain(), sa.Index("audit_action", "action"), sqlite_autoincrement=True),
        sa.Table("accounts", metadata, sa.Column("name", sa.Text, primary_key=True),
                 _text("role", None), _text("password_hash"), _text("created", None),
                 sa.Column("disabled", sa.Integer, nullable=False, server_default=sa.text("0"))),
        sa.Table("sessions", metadata, sa.Column("token_hash", sa.Text, primary_key=True),
                 _text("name", None), _text("kind", "session"), _text("expires", None)),
        sa.Table("sign_in_failures", metadata, _text("name", None), _text("time", None),
                 sa.Index("sign_in_failures_name", "name", "time")),
        sa.Table("unknown_sign_ins", metadata, sa.Column("window", sa.Text, primary_key=True),
                 sa.Column("attempts", sa.Integer, nullable=False), _text("names", "[]")),
        sa.Table("golden", metadata, _id(),
                 _text("time", None), _text("who", None), _text("photo_path", None, unique=True),
                 _text("label", None), _text("source", None), _text("sha256"), sqlite_autoincrement=True),
        sa.Table("watchers", metadata, sa.Column("id", sa.Text, primary_key=True),
                 _text("host"), _text("incoming"),
                 sa.Column("heartbeat_unix", DOUBLE, nullable=False, server_default=sa.text("0")),
                 _text("status", "{}")),
    ]


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    present = set(inspector.get_table_names())
    for table in tables(sa.MetaData()):
        if table.name not in present:
            table.create(bind)
            continue
        have = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in have:
                op.add_column(table.name, column._copy())
        indexes = {i["name"] for i in inspector.get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in indexes:
                index.create(bind)


def downgrade() -> None:
    raise NotImplementedError("The first revision is not undone: restore the backup taken before the upgrade.")
