"""Operating points in the database: every point saved for a run (who, when, the point), so that every server and
watcher of a plant reads the same one; before this revision it was a file in the run folder (still read for runs
that have no row).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if "operating_points" in sa.inspect(op.get_bind()).get_table_names():
        return
    op.create_table(
        "operating_points",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        *(sa.Column(name, sa.Text, nullable=False) for name in ("run_id", "time", "who", "point")),
    )
    op.create_index("operating_points_run", "operating_points", ["run_id", "id"])


def downgrade() -> None:
    op.drop_index("operating_points_run", "operating_points")
    op.drop_table("operating_points")
