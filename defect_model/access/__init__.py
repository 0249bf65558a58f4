"""Who may do what and the record of who did it. Imports only `common` (where the database is)."""
