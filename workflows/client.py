"""Connecting to Temporal with the encrypting data converter and tracing."""

from __future__ import annotations

from datetime import timedelta

from google.protobuf.duration_pb2 import Duration
from temporalio.api.namespace.v1 import NamespaceConfig
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest, UpdateNamespaceRequest
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


async def ensure_retention(*, client: Client, namespace: str, retention: timedelta) -> timedelta:
    """Set how long Temporal keeps a closed workflow's history in `namespace`, and return it.

    A referral's history is unreadable from its purge on (its payload key is destroyed, see
    services.crypto.payload_keys); the purge ends the workflow, and the namespace retention
    bounds how long even that ciphertext stays on the Temporal server afterwards."""
    service = client.workflow_service
    described = await service.describe_namespace(DescribeNamespaceRequest(namespace=namespace))
    current = described.config.workflow_execution_retention_ttl.ToTimedelta()
    if current != retention:
        ttl = Duration()
        ttl.FromTimedelta(retention)
        await service.update_namespace(
            UpdateNamespaceRequest(
                namespace=namespace, config=NamespaceConfig(workflow_execution_retention_ttl=ttl)
            )
        )
    return retention
