"""Tamper-evident audit trail: an RFC 6962 Merkle log with signed tree heads."""

from services.audit.log import AuditLog, ConsistencyProof, InclusionProof
from services.audit.models import (
    AuditDecision,
    AuditEntry,
    AuditEvent,
    AuditEventType,
    SignedTreeHead,
    install_append_only_triggers,
    pseudonymise_referral,
)
from services.audit.verification import VerificationResult
from services.audit.witness import WitnessCosignature

__all__ = [
    "AuditDecision",
    "AuditEntry",
    "AuditEvent",
    "AuditEventType",
    "AuditLog",
    "ConsistencyProof",
    "InclusionProof",
    "SignedTreeHead",
    "VerificationResult",
    "WitnessCosignature",
    "install_append_only_triggers",
    "pseudonymise_referral",
]
