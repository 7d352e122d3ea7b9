"""Security: certificates and TLS contexts for transport security.

Submodules are imported on demand, never from here, so ``import edge_min.security`` stays
cheap and works where ``ssl`` is absent (Pyodide unvendors it):

- ``edge_min.security.certs``: ``init_certs`` makes a development CA, a central server
  certificate and a device client certificate (``edge-min certs init DIR``).
- ``edge_min.security.pkix``: a device's key, CSR and certificate reading with pycryptodome
  and a DER reader of its own (enrollment in a binary without ``cryptography``).
- ``edge_min.security.tls``: ``server_context``/``client_context`` (TLS 1.3 minimum, mutual
  authentication), ``context_from_config``, ``peer_identity`` and the plain-HTTP policy
  ``check_plain_http``.
"""

from __future__ import annotations

__all__: list[str] = []
