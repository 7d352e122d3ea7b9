"""Updates on the device: signed bundles, A/B slots and rollback, following staged rollouts.

``metadata`` (the TUF-style roles and their signatures), ``trust`` (what the device trusts
and has seen), ``verify`` (the client's checks, for a bundle file or a served repository),
``bundle`` (the one-file format), ``delta`` (zstd patch-from), ``onefile`` (the gateway
binary's layout, and its expanded form that binary deltas work on), ``keys`` (the signing keys),
``bundle_commands`` (the ``edge-min update keys|bundle|verify`` commands), ``follow`` (the
device side of central's staged rollouts), ``slots`` / ``installer`` / ``supervisor``
(A/B slots, the state file, tries and fallback), ``subsystem`` (``Update``: the commit
after health, the ``update`` commands), ``install`` (a bundle into the inactive slot).
Nothing here imports anything beyond the standard library at import time.
"""
