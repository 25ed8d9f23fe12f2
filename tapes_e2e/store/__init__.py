"""The local tapes SQLite store: Go tapes' schema, row encodings and the sync bookkeeping."""
