"""The database: tables, engines, loading a run's records, persisting its results, locks
and history. SQLite, PostgreSQL and MariaDB through SQLAlchemy."""
