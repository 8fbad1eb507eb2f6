"""Words for the engine's codes (stages, reasons, categories...), marked for translation.

The UI shows `_(label(code))`; an unknown code is shown as is, so a new code is visible
rather than hidden (and the completeness test asks for its label).
"""

from __future__ import annotations

import re
from collections.abc import Callable


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
    "platform": N_("Platform operations"),
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


# Why a step was refused, as the API says it (English, in problem+json `detail`), and what
# the UI says in the user's language. tests/unit/test_web_refusals.py finds every refusal
# text of the code a page calls and asks for its entry here.
REFUSALS: dict[str, str] = {
    # a step the workflow refuses (workflows/referral.py, api/errors.py)
    "this step is not possible on this referral now": N_(
        "This step is not possible on this referral now."
    ),
    "the referral changed while this step waited; nothing was done": N_(
        "The referral changed while this step waited; nothing was done."
    ),
    "the step was refused": N_("The step was refused."),
    "a refusal can only be recorded while consent is awaited": N_(
        "A refusal can only be recorded while the consent is awaited."
    ),
    "the consent's validity has already ended": N_("The consent's validity has already ended."),
    "the consent's validity has ended": N_("The consent's validity has ended."),
    "the stage changed": N_("The referral moved on to another stage."),
    "the organisation may no longer take this step": N_(
        "Your organisation may no longer take this step."
    ),
    "the offer ended": N_("The offer has ended."),
    "a consent must include the purpose referral_to_care": N_(
        "A consent must include the purpose 'referral to care'."
    ),
    "there is no consent to withdraw": N_("There is no consent to withdraw."),
    "this organisation may not take this step on this referral": N_(
        "Your organisation may not take this step on this referral."
    ),
    "the referral's process has ended": N_("The referral's process has ended."),
    # refusals of the API and its services (api/routes.py, services/)
    "no such referral": N_("There is no such referral, or you may not see it."),
    "you may not take this step on this referral": N_(
        "You may not take this step on this referral."
    ),
    "you may not create referrals under this framework": N_(
        "You may not create referrals under this cooperation framework."
    ),
    "you may not list referrals": N_("You may not list referrals."),
    "an Idempotency-Key header is required to create a referral": N_(
        "The form could not be sent safely; please send it again."
    ),
    "the deadline of this stage has passed": N_(
        "The deadline of this stage has passed; the step was not taken."
    ),
    "the workflow service did not answer in time": N_(
        "The service is briefly unavailable; please try again in a moment."
    ),
    "the referral's process did not answer in time; try again with the same Idempotency-Key": N_(
        "The service is briefly unavailable; please try again in a moment."
    ),
    "the workflow service did not answer in time; try again": N_(
        "The service is briefly unavailable; please try again in a moment."
    ),
    "the database is unavailable; try again": N_(
        "The service is briefly unavailable; please try again in a moment."
    ),
    "the trajectory ended before this report; nothing was recorded": N_(
        "The trajectory ended before this report; nothing was recorded."
    ),
    "the trajectory ended before this close; nothing was recorded": N_(
        "The trajectory ended before this close; nothing was recorded."
    ),
    "no active cooperation framework with this id": N_(
        "There is no active cooperation framework of this kind."
    ),
    "your organisation does not take part in this cooperation framework": N_(
        "Your organisation does not take part in this cooperation framework."
    ),
    "this Idempotency-Key was used with a different request": N_(
        "This form was already sent with other content; please open it again."
    ),
    "your organisation is not registered": N_("Your organisation is not registered."),
    "the person's consent ended before these care notes could be stored; "
    "the notes were not recorded": N_(
        "The person's consent ended before these care notes could be stored; "
        "the notes were not recorded."
    ),
    "a request with this Idempotency-Key is being processed": N_(
        "This form is being processed; please wait a moment."
    ),
    "a request with this Idempotency-Key is being processed; try again shortly": N_(
        "This form is being processed; please wait a moment."
    ),
    "the referral is not in a stage where consent can be withdrawn": N_(
        "The consent cannot be withdrawn in the referral's current stage."
    ),
    "there is no active consent to withdraw": N_("There is no active consent to withdraw."),
    "care workers are assigned only while the care trajectory runs": N_(
        "Care workers are assigned only while the care trajectory runs."
    ),
    "this care worker is not assigned to the case": N_(
        "This care worker is not assigned to the case."
    ),
    "only auditors and administrators may ask the policies to explain": N_(
        "Only auditors and administrators may ask the policies to explain."
    ),
    "give exactly one of category or action": N_("Choose a data category or an action."),
    "to ask about a disclosure, give the category instead": N_(
        "To ask about a disclosure, choose the data category instead."
    ),
    "the workflow service is unavailable": N_("The workflow service is unavailable."),
    "the database is busy; try again": N_("The database is busy; please try again."),
}

# What a consent in valid form lacks (services/consent.py `check_form`).
CONSENT_PARTS: dict[str, str] = {
    "purpose referral_to_care": N_("the purpose 'referral to care'"),
    "data categories": N_("the data categories"),
    "recipients": N_("who may receive the data"),
    "who may disclose": N_("who may disclose the data"),
    "the right to revoke, explained": N_("that the right to revoke was explained"),
    "expiry": N_("an expiry date"),
    "an expiry in the future": N_("an expiry date in the future"),
    "who signed, and in which capacity": N_("who signed, and in which capacity"),
    "a capacity that fits who signed (the person signs as self)": N_(
        "a capacity that fits who signed (the person signs for themselves)"
    ),
    "the signing date": N_("the signing date"),
    "a signing date that is not in the future": N_("a signing date that is not in the future"),
    "a signing date before the expiry": N_("a signing date before the expiry"),
    "how it was signed": N_("how it was signed"),
}

_NOT_IN_STAGE = re.compile(
    r"not allowed in stage (\w+)(?: \(needs: [\w, ]+\)|: the referral has ended)"
)
_CONSENT_LACKS = "the consent lacks: "
_CHECK = "check: "


def refusal_text(translate: Callable[..., str], detail: str | None) -> str | None:
    """What the UI says, in the user's language, for the API's (English) `detail`: the known
    texts and patterns translated; any other text only in English, never in another language
    (the page's title still says, translated, what kind of refusal it was)."""
    if not detail:
        return None
    if detail in REFUSALS:
        return translate(REFUSALS[detail])
    if (stage := _NOT_IN_STAGE.fullmatch(detail)) is not None:
        return translate(
            N_("This step is not possible while the referral is at the stage '%(stage)s'."),
            stage=translate(label(stage[1])),
        )
    if detail.startswith(_CONSENT_LACKS):
        parts = detail.removeprefix(_CONSENT_LACKS).split(", ")
        if all(part in CONSENT_PARTS for part in parts):
            return translate(
                N_("The consent lacks: %(parts)s."),
                parts="; ".join(translate(CONSENT_PARTS[part]) for part in parts),
            )
    if detail.startswith(_CHECK):
        fields = detail.removeprefix(_CHECK).split(", ")
        return translate(
            N_("Check these fields: %(fields)s."),
            fields=", ".join(translate(label(name)) for name in fields),
        )
    return detail if getattr(translate, "lang", "en") == "en" else None
