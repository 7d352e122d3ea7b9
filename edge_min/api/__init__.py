"""The local HTTP API: the server, access control, and the assembly of every route."""
