"""Every error edge_min raises on purpose, rooted at one ``EdgeError``.

::

    EdgeError                       edge_error              the root: every error raised on purpose
    ├── ConfigError                 config_error            a config file or value is wrong
    │                                                       (names file, key, value and fix)
    ├── MissingDependency           missing_dependency      an optional extra is not installed
    │                                                       (prints the pip command)
    ├── StorageError                storage_error           the store failed
    │   ├── SchemaError             schema_error            the database schema is not the one
    │   │                                                   edge_min expects
    │   ├── IntegrityCheckFailed    integrity_check_failed  PRAGMA integrity_check found damage
    │   ├── QuotaExceeded           quota_exceeded          a write would pass max_storage_usage
    │   │                                                   or an agent's max_storage
    │   ├── NotPersisted            not_persisted           committed changes could not be copied
    │   │                                                   to the host's durable storage (a
    │   │                                                   browser's IndexedDB): not reported done
    │   ├── NotFound                not_found               no row or file with that id or name
    │   └── EncryptionError         encryption_error        at-rest encryption cannot go on
    │       │                                               (key ring, master key, no AES here)
    │       ├── ValueRejected       value_rejected          a stored value fails authentication
    │       │                                               (flipped, truncated or moved; names
    │       │                                               table, column and row id)
    │       ├── KeysDropped         keys_dropped            the data keys were erased from memory
    │       │                                               (the device locked down)
    │       ├── MasterKeyMismatch   master_key_mismatch     the key ring is wrapped under another
    │       │                                               master key (a backup of another device)
    │       └── EncryptedRowsExist  encrypted_rows_exist    encryption is switched off while rows
    │                                                       are still encrypted
    ├── WorkflowError               workflow_error          a workflow could not be defined or run
    │   └── WorkflowValidationError workflow_invalid        a workflow definition is invalid
    │                                                       (names the step and the field)
    ├── AgentError                  agent_error             an agent could not be added or invoked
    │   └── AgentLimitExceeded      agent_limit_exceeded    an agent's worker hit a resource limit
    │                                                       (memory, time, storage)
    ├── SchedulerError              scheduler_error         a job could not be scheduled
    │                                                       (bad cron, bad interval)
    ├── RuntimeBusy                 runtime_busy            another ``edge-min run`` already
    │   │                                                   holds the data directory
    │   └── LeaderGone              leader_gone             the browser tab that ran the runtime
    │                                                       closed before it answered another
    │                                                       tab's call (wasm/web/edge-min.js)
    ├── HlcError                    sync_bad_hlc            a hybrid logical clock timestamp is
    │                                                       malformed (in edge_min.sync.hlc)
    ├── CertificateError            certificate_error       development certificates could not
    │                                                       be made (in edge_min.security.certs)
    ├── PkixError                   pkix_error              a certificate, CSR or key is malformed
    │                                                       or of an unhandled kind
    │                                                       (in edge_min.security.pkix)
    ├── BadBatch                    bad_batch               a push batch, alert or metric is
    │                                                       malformed (in edge_min.central.model)
    ├── BatchIdReused               batch_id_reused         a batch id came again for another
    │                                                       node or entity
    │                                                       (in edge_min.central.model)
    ├── ProvisioningError           bad_provisioning        a device's provisioning or action is
    │   │                                                   wrong (in edge_min.central.model)
    │   └── BadCsr                  bad_csr                 a device's certificate signing request
    │                                                       cannot be signed
    │                                                       (in edge_min.central.ca)
    ├── EnrollmentRefused           enroll_refused          a claim token is unknown, used,
    │                                                       expired or for another device
    │                                                       (in edge_min.central.enrollment_store)
    ├── EnrollmentError             enrollment_error        the device could not enroll with
    │                                                       central (in edge_min.lifecycle.enroll)
    ├── FragmentRefused             config_fragment_refused central's config fragment does not
    │                                                       load merged into edge-config.yaml
    │                                                       (in edge_min.lifecycle.config_fragment)
    ├── FactoryRefused              factory_certificate_refused  a factory certificate does not
    │                                                       prove the device's identity
    │                                                       (in edge_min.central.ca)
    ├── RolloutRefused              bad_rollout             a rollout names a bundle or devices
    │                                                       that are not there
    │                                                       (in edge_min.central.rollout_store)
    ├── RolloutConflict             rollout_conflict        a rollout cannot pause, resume or
    │                                                       cancel in its status
    │                                                       (in edge_min.central.rollout_store)
    ├── UsageError                  usage_error             a command line cannot be carried out
    │                                                       as written
    ├── LocalApiError               local_api_error         the CLI could not call its own running
    │                                                       runtime's API, or it refused
    │                                                       (in edge_min.security.local)
    ├── AttestationError            attestation_error       (the tree: edge_min.security.quote)
    ├── BootChainUnverified         boot_chain_unverified   security.secure_boot is true, but
    │                                                       nothing verified how this started
    ├── LockedDown                  locked_down             the device is locked down after
    │                                                       tampering (in edge_min.gate)
    ├── TamperError                 tamper_error            (the tree: edge_min.security.manifest)
    ├── SyncError                   sync_error              (the tree: edge_min.sync.errors)
    ├── UpdateError                 update_error            (the tree: edge_min.update.errors)
    ├── SlotError                   update_slot_error       (the tree: edge_min.update.slots)
    ├── TokenError                  token_error             (the tree: edge_min.security.tokens)
    └── ApiError                    api_error               (the tree: edge_min.routing)

Each class carries its own stable ``code`` (the second column) so the HTTP API and the sync
protocol can report errors across a boundary without leaking Python class names; codes are
unique, and once on the wire they do not change. A class lives in this module unless its line
says ``(in module)``. A package whose errors are a tree of their own draws that tree in its
module's docstring, and the line here names the module (``the tree: ...``).
``tests/unit/test_error_registry.py`` imports every module and checks that every subclass is
drawn, under its real parent, with its own unique code.
"""

from __future__ import annotations

from typing import Any


class EdgeError(Exception):
    """The root of every error edge_min raises on purpose."""

    code = "edge_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        """The error as JSON-ready data for the API and the wire."""
        return {"code": self.code, "message": self.message}


class ConfigError(EdgeError):
    """A config file or value is wrong; the message names file, key path, value and fix."""

    code = "config_error"

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        path: str | None = None,
        value: Any = None,
        errors: list[ConfigError] | None = None,
    ) -> None:
        self.file = file
        self.path = path
        self.value = value
        self.errors = errors or []
        prefix = ""
        if file and path:
            prefix = f"{file}: {path}: "
        elif file:
            prefix = f"{file}: "
        elif path:
            prefix = f"{path}: "
        self.reason = message
        super().__init__(prefix + message)

    @classmethod
    def collect(cls, errors: list[ConfigError]) -> ConfigError:
        """One error standing for several, each on its own line."""
        if len(errors) == 1:
            return errors[0]
        err = cls("\n".join(e.message for e in errors), errors=errors)
        err.message = "\n".join(e.message for e in errors)
        return err


class MissingDependency(EdgeError):
    """An optional dependency is missing; the message says which ``pip install`` fixes it."""

    code = "missing_dependency"

    def __init__(self, module: str, extra: str, purpose: str) -> None:
        import sys

        if getattr(sys, "frozen", False) or "__compiled__" in globals():
            # A single-file gateway binary cannot pip install: name the variant that has it.
            fix = "use the edge-min-linux-<arch>-onnx binary, which carries onnxruntime"
            if extra != "onnx":
                fix = f"this binary was built without '{module}'; rebuild it with the extra"
        else:
            fix = f"install it with: pip install 'edge-min[{extra}]'"
        super().__init__(f"{purpose} needs the '{module}' package, which is not installed; {fix}")
        self.module = module
        self.extra = extra


class StorageError(EdgeError):
    """The store failed."""

    code = "storage_error"


class SchemaError(StorageError):
    """The database schema is not the one edge_min expects."""

    code = "schema_error"


class IntegrityCheckFailed(StorageError):
    """``PRAGMA integrity_check`` reported damage."""

    code = "integrity_check_failed"


class NotPersisted(StorageError):
    """Committed changes could not be copied to durable storage, so nothing is reported done.

    Raised by a host whose database lives in memory and is copied out after each commit (a
    browser tab's IndexedDB): the runtime goes on, and says so, instead of running on memory.
    """

    code = "not_persisted"


class QuotaExceeded(StorageError):
    """A write would pass a storage quota; nothing was written."""

    code = "quota_exceeded"

    def __init__(self, message: str, *, usage: int = 0, limit: int = 0, needed: int = 0) -> None:
        super().__init__(message, usage=usage, limit=limit, needed=needed)
        self.usage = usage
        self.limit = limit
        self.needed = needed


class NotFound(StorageError):
    """No row or file with that id or name."""

    code = "not_found"


class EncryptionError(StorageError):
    """At-rest encryption cannot go on: the key ring, the master key, or no AES on this host."""

    code = "encryption_error"


class ValueRejected(EncryptionError):
    """A stored value failed authentication; names its table, column and row id."""

    code = "value_rejected"

    def __init__(self, message: str, *, table: str, column: str, row_id: str) -> None:
        super().__init__(message, table=table, column=column, row_id=row_id)
        self.table = table
        self.column = column
        self.row_id = row_id


class KeysDropped(EncryptionError):
    """The data keys were erased from memory (lockdown): encrypted columns cannot be used."""

    code = "keys_dropped"


class MasterKeyMismatch(EncryptionError):
    """The database's key ring is wrapped under a master key this device does not hold."""

    code = "master_key_mismatch"


class EncryptedRowsExist(EncryptionError):
    """Encryption is switched off but rows are still encrypted (run ``keys decrypt-all``)."""

    code = "encrypted_rows_exist"


class WorkflowError(EdgeError):
    """A workflow could not be defined or run."""

    code = "workflow_error"


class WorkflowValidationError(WorkflowError):
    """A workflow definition is invalid; the message names the step and the field."""

    code = "workflow_invalid"

    def __init__(self, message: str, *, step: str | None = None, field: str | None = None) -> None:
        where = ""
        if step and field:
            where = f"step '{step}', field '{field}': "
        elif step:
            where = f"step '{step}': "
        elif field:
            where = f"field '{field}': "
        super().__init__(where + message)
        self.step = step
        self.field = field


class AgentError(EdgeError):
    """An agent could not be added or invoked."""

    code = "agent_error"


class AgentLimitExceeded(AgentError):
    """An agent's worker was stopped for passing a resource limit."""

    code = "agent_limit_exceeded"

    def __init__(self, message: str, *, limit: str) -> None:
        super().__init__(message, limit=limit)
        self.limit = limit


class SchedulerError(EdgeError):
    """A job could not be scheduled."""

    code = "scheduler_error"


class RuntimeBusy(EdgeError):
    """Another ``edge-min run`` already holds this data directory."""

    code = "runtime_busy"


class LeaderGone(RuntimeBusy):
    """In a browser, the tab whose worker ran the runtime closed or crashed before it answered
    a call another tab had forwarded to it; the page's loader (``wasm/web/edge-min.js``)
    rejects that call with this code, and the call may or may not have been carried out."""

    code = "leader_gone"


class UsageError(EdgeError):
    """A command line that cannot be carried out as written."""

    code = "usage_error"


class BootChainUnverified(EdgeError):
    """``security.secure_boot`` is true, but neither a signed launcher nor UEFI Secure Boot
    verified how the runtime started; the message names what is missing and the fix."""

    code = "boot_chain_unverified"
