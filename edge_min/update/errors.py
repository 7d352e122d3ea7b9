"""Why an update was refused: one error naming what failed and the fix.

::

    EdgeError
    └── UpdateError                 update_error            an update could not be made,
        │                                                   verified or applied
        ├── UpdateRefused           update_refused          the update is refused (a check
        │   │                                               failed; nothing was written)
        │   ├── BadSignature        bad_signature           a role's metadata lacks its
        │   │                                               threshold of valid signatures
        │   ├── RollbackRefused     rollback_refused        a version is lower than the
        │   │                                               trusted or installed one
        │   ├── MetadataExpired     metadata_expired        a role's metadata has expired
        │   │                                               (a freeze attack, or stale)
        │   ├── PayloadMismatch     payload_mismatch        a payload's length or hash is not
        │   │                                               the signed one
        │   ├── WrongArch           wrong_arch              the update is for another
        │   │                                               architecture
        │   └── BadBundle           bad_bundle              the bundle file or a metadata file
        │                                                   is malformed or truncated
        ├── DeltaBaseMissing        delta_base_missing      a delta cannot be applied here (no
        │                                                   or another base): fetch the full one
        └── SigningKeysError        update_keys_error       the signing keys folder is missing,
                                                            incomplete or already made
"""

from __future__ import annotations

from edge_min.errors import EdgeError

__all__ = [
    "BadBundle",
    "BadSignature",
    "DeltaBaseMissing",
    "MetadataExpired",
    "PayloadMismatch",
    "RollbackRefused",
    "SigningKeysError",
    "UpdateError",
    "UpdateRefused",
    "WrongArch",
]


class UpdateError(EdgeError):
    """An update could not be made, verified or applied."""

    code = "update_error"


class UpdateRefused(UpdateError):
    """A check of the update failed; nothing was written outside the work folder."""

    code = "update_refused"


class BadSignature(UpdateRefused):
    """A role's metadata has fewer valid signatures by its keys than its threshold."""

    code = "bad_signature"


class RollbackRefused(UpdateRefused):
    """A metadata or payload version is lower than the trusted or installed one."""

    code = "rollback_refused"


class MetadataExpired(UpdateRefused):
    """A role's metadata has passed its expiry time."""

    code = "metadata_expired"


class PayloadMismatch(UpdateRefused):
    """A payload (or delta) has another length or SHA-256 than the signed targets say."""

    code = "payload_mismatch"


class WrongArch(UpdateRefused):
    """The update's target is built for another machine architecture."""

    code = "wrong_arch"


class BadBundle(UpdateRefused):
    """The bundle file or a metadata file in it is malformed, truncated or not canonical."""

    code = "bad_bundle"


class DeltaBaseMissing(UpdateError):
    """A delta needs a base payload this device does not have: fetch the full bundle."""

    code = "delta_base_missing"


class SigningKeysError(UpdateError):
    """The signing keys folder is missing, incomplete, or would be overwritten."""

    code = "update_keys_error"
