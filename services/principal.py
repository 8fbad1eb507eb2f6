"""The authenticated caller, as every service sees it."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class Sector(StrEnum):
    JUSTICE = "justice"
    HEALTH = "health"
    WELFARE = "welfare"
    AUDIT = "audit"
    # the platform's operators: they run the engine and are no party to any case
    PLATFORM = "platform"


class Role(StrEnum):
    PROSECUTOR = "prosecutor"
    JUSTICE_ASSISTANT = "justice_assistant"
    INTAKE_COORDINATOR = "intake_coordinator"
    CARE_WORKER = "care_worker"
    AUDITOR = "auditor"
    ADMIN = "admin"


# Roles of the platform, not of casework: the only roles a `platform` principal holds.
PLATFORM_ROLES = frozenset({Role.ADMIN})


class Principal(BaseModel):
    """Who is asking: subject (IdP user id), organisation code, its sector, realm roles."""

    model_config = ConfigDict(frozen=True)

    subject: str
    organisation: str
    sector: Sector
    roles: frozenset[Role]

    def has_any(self, *roles: Role) -> bool:
        return any(role in self.roles for role in roles)
