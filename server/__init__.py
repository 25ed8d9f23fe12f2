"""The tapes-e2e sync server (Litestar). It stores opaque blobs and never reads content."""

__all__: list[str] = []
