"""The purpose of use recorded with every audit entry: HL7 v3 PurposeOfUse codes, and a
small local code system for the purposes of justice that HL7 does not name.

HL7 v3 PurposeOfUse (code system 2.16.840.1.113883.5.8, value set
http://terminology.hl7.org/ValueSet/v3-PurposeOfUse) names care purposes only. The diversion
to care at the prosecutor's office has two purposes on the justice side, coded in the local
code system `urn:referral:purpose-of-use` (a DPO reads them in the table below):

| code      | system | meaning |
|-----------|--------|---------|
| TREAT     | HL7    | treatment: the care team's work on the case (health sector) |
| CAREMGT   | HL7    | care management: the welfare sector's support on the case |
| HOPERAT   | HL7    | healthcare operations: the audit office's review of the trail |
| PATRQT    | HL7    | patient requested: the person's access report, asked by the person |
| RECORDMGT | HL7    | records management: purging and crypto-shredding at the end of retention |
| HSYSADMIN | HL7    | system administration: logins, logouts, failed logins, operators |
| JUSTFUP   | local  | judicial follow-up: the referring office following its referral |
| JUSTRPT   | local  | judicial reporting: compliance facts sent on the channel to justice |
"""

from __future__ import annotations

from enum import StrEnum

from services.principal import Sector

HL7_PURPOSE_OF_USE = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
LOCAL_PURPOSE_OF_USE = "urn:referral:purpose-of-use"


class PurposeOfUse(StrEnum):
    """The purposes an access is made for (see the module's table)."""

    TREAT = "TREAT"
    CAREMGT = "CAREMGT"
    HOPERAT = "HOPERAT"
    PATRQT = "PATRQT"
    RECORDMGT = "RECORDMGT"
    HSYSADMIN = "HSYSADMIN"
    JUSTFUP = "JUSTFUP"
    JUSTRPT = "JUSTRPT"

    @property
    def system(self) -> str:
        """The code system the code belongs to."""
        return LOCAL_PURPOSE_OF_USE if self in _LOCAL else HL7_PURPOSE_OF_USE


_LOCAL = frozenset({PurposeOfUse.JUSTFUP, PurposeOfUse.JUSTRPT})

_BY_SECTOR = {
    Sector.JUSTICE: PurposeOfUse.JUSTFUP,
    Sector.HEALTH: PurposeOfUse.TREAT,
    Sector.WELFARE: PurposeOfUse.CAREMGT,
    Sector.AUDIT: PurposeOfUse.HOPERAT,
    Sector.PLATFORM: PurposeOfUse.HSYSADMIN,  # the platform's operators
}


def for_sector(sector: Sector) -> PurposeOfUse:
    """The purpose of a professional's access to a case, from their organisation's sector."""
    return _BY_SECTOR[sector]


def system_of(code: str) -> str | None:
    """The code system of a recorded purpose; None for the words entries used before codes."""
    try:
        return PurposeOfUse(code).system
    except ValueError:
        return None
