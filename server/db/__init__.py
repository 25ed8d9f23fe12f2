"""The server's database: engine, models, migrations."""
