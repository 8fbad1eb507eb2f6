"""Connecting to Temporal with the encrypting data converter and tracing."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.contrib.opentelemetry import TracingInterceptor

from services.crypto import KeyRing, ReferralPayloadKeys, data_converter


async def connect(
    *,
    address: str,
    namespace: str,
    keyring: KeyRing,
    referral_keys: ReferralPayloadKeys | None = None,
) -> Client:
    """A client whose payloads are encrypted (a referral's with its own key) and whose
    calls are traced."""
    return await Client.connect(
        address,
        namespace=namespace,
        data_converter=data_converter(keyring, referral_keys),
        interceptors=[TracingInterceptor()],
    )
