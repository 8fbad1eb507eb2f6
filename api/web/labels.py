"""Words for the engine's codes (stages, reasons, categories...), marked for translation.

The UI shows `_(label(code))`; an unknown code is shown as is, so a new code is visible
rather than hidden (and the completeness test asks for its label).
"""

from __future__ import annotations


def N_(message: str) -> str:  # noqa: N802 - the conventional gettext marker name
    """Marks a message for extraction; translated where it is shown."""
    return message


LABELS: dict[str, str] = {
    # stages
    "draft": N_("Draft"),
    "awaiting_consent": N_("Awaiting consent"),
    "matching": N_("Looking for a care provider"),
    "offered": N_("Offered to a care provider"),
    "on_hold": N_("On hold: no provider available"),
    "accepted": N_("Accepted by a care provider"),
    "in_progress": N_("In care"),
    "completed": N_("Completed"),
    "failed": N_("Dropped out"),
    "not_started": N_("Care not started"),
    "cancelled": N_("Cancelled"),
    "returned_to_justice": N_("Returned to justice"),
    "outcome_reported": N_("Outcome reported"),
    "closed": N_("Closed"),
    "purged": N_("Purged after retention"),
    "referred_to_care": N_("Referred to care"),
    "ended": N_("Ended"),
    "no_longer_visible": N_("No longer visible to you"),
    # decline reasons
    "no_capacity": N_("No capacity"),
    "outside_service_area": N_("Outside our service area"),
    "not_eligible": N_("Not eligible"),
    "missing_information": N_("Missing information"),
    "other": N_("Other"),
    # target groups
    "substance_use": N_("Substance use"),
    "gambling": N_("Gambling"),
    "gaming": N_("Gaming"),
    # offence categories
    "drug_possession": N_("Drug possession"),
    "drug_use_in_public": N_("Drug use in public"),
    "public_intoxication": N_("Public intoxication"),
    "gambling_related": N_("Gambling related"),
    # consent purposes
    "referral_to_care": N_("Referral to care"),
    "progress_reporting_to_justice": N_("Progress reporting to justice"),
    "care_team_sharing": N_("Sharing within the care team"),
    # data categories
    "identity": N_("Identity"),
    "contact": N_("Contact details"),
    "judicial_context": N_("Judicial context"),
    "referral_reason": N_("Reason for referral"),
    "clinical": N_("Clinical notes"),
    "welfare": N_("Welfare notes"),
    "compliance": N_("Compliance facts"),
    "access_log": N_("Access log"),
    # fields
    "framework_id": N_("Cooperation framework"),
    "district": N_("Judicial district"),
    "language": N_("Language of the person"),
    "target_group": N_("Target group"),
    "form": N_("The form"),
    "name": N_("Name"),
    "birth_date": N_("Date of birth"),
    "national_number": N_("National register number"),
    "phone": N_("Phone"),
    "address": N_("Address"),
    "offence_category": N_("Offence category"),
    "notice_number": N_("Notice number"),
    "deadline": N_("Deadline"),
    "substance_or_behaviour": N_("Substance or behaviour"),
    "note": N_("Note"),
    "facts": N_("Facts"),
    # attendance, compliance facts and process facts
    "attending": N_("Attending"),
    "not_attending": N_("Not attending"),
    "registered": N_("Registered with the care provider"),
    "started": N_("Care started"),
    "dropped_out": N_("Dropped out"),
    "consent_withdrawn": N_("Consent withdrawn"),
    "consent_expired": N_("Consent expired"),
    "consent_not_given": N_("Consent not given"),
    "no_provider_available": N_("No provider available"),
    "ended_without_reporting_consent": N_("Ended (no consent to report the outcome)"),
    "outcome_not_reported": N_("Ended: the care provider stopped reporting"),
    # outcomes and decisions
    "dismissed": N_("Dismissed"),
    "conditional_dismissal": N_("Conditional dismissal"),
    "prosecute": N_("Prosecute"),
    "other_measure": N_("Other measure"),
    # audit decisions
    "permit": N_("Permitted"),
    "deny": N_("Denied"),
    # task status
    "requested": N_("Requested"),
    "in-progress": N_("In progress"),
    "on-hold": N_("On hold"),
    "received": N_("Received"),
    "rejected": N_("Rejected"),
    "ready": N_("Ready"),
    # consent: status, who signed, in which capacity, how
    "active": N_("Active"),
    "withdrawn": N_("Withdrawn"),
    "expired": N_("Expired"),
    "refused": N_("Refused"),
    "superseded": N_("Replaced by a newer version"),
    "person": N_("The person"),
    "legal_representative": N_("A legal representative"),
    "self": N_("For themselves"),
    "parent": N_("Parent"),
    "guardian": N_("Guardian"),
    "administrator": N_("Court-appointed administrator"),
    "mandatary": N_("Representative appointed by the person"),
    "paper_form": N_("Paper form"),
    "electronic_signature": N_("Electronic signature"),
    "verbal_with_witness": N_("Verbally, with a witness"),
    # withheld reasons
    "not_permitted": N_("Not permitted"),
    "forbidden_by_policy": N_("Forbidden by professional secrecy rules"),
    "no_active_consent": N_("No active consent"),
    # sectors
    "justice": N_("Justice"),
    "health": N_("Health care"),
    "welfare_sector": N_("Welfare"),
    "audit": N_("Audit"),
    # roles
    "prosecutor": N_("Prosecutor"),
    "justice_assistant": N_("Justice assistant"),
    "intake_coordinator": N_("Intake coordinator"),
    "care_worker": N_("Care worker"),
    "auditor": N_("Auditor"),
    "admin": N_("Administrator"),
}


def label(code: object) -> str:
    """The (English, translatable) label of a code; the code itself when none is known."""
    text = str(code) if code is not None else ""
    return LABELS.get(text, text)
