"""The server's areas, one package or module each: HTTP in ``controllers``, rules and SQL in
``services`` (see STYLE.md)."""
