"""Database adapter: SQLAlchemy Core tables, engine setup and repositories."""
