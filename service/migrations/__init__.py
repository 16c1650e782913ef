"""The store's schema migrations (Alembic): ``versions/`` holds one revision per schema change, and
``service/schema.py`` brings a database to the newest at start."""
