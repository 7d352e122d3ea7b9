"""The device's lifecycle: enrollment with central, its reports, decommissioning.

``enroll`` (``edge-min enroll``: a claim token and a CSR in, a certificate, the CA, the sync
key and the attestation policy out), ``decommission`` (``edge-min decommission --yes``:
crypto-erase, then tell central), ``subsystem.Lifecycle`` (the commands, the report to
central at each sync cycle, and a status section).
"""
