"""The Temporal UI's remote codec: decode/encode payloads for authorised users only.

Payloads are encrypted by `services.crypto.EncryptionCodec`; the Temporal UI (started by
`make run` with `--ui-codec-endpoint`) posts them here with the user's bearer token.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from google.protobuf import json_format
from pydantic import BaseModel, ConfigDict, Field
from temporalio.api.common.v1 import Payload, Payloads

from api.deps import ContextDep, PrincipalDep, RuntimeDep
from services import policy
from services.access import RequestContext
from services.audit.models import AuditEventType
from services.crypto import EncryptionCodec
from services.errors import Forbidden, Unprocessable
from services.principal import Principal
from services.runtime import Runtime

router = APIRouter(prefix="/codec", tags=["codec"])


class PayloadsBody(BaseModel):
    """Temporal's JSON form of Payloads: metadata values and data are base64."""

    model_config = ConfigDict(extra="forbid")

    payloads: list[dict[str, Any]] = Field(default_factory=list, max_length=1000)


def _parse(body: PayloadsBody) -> list[Payload]:
    try:
        message = json_format.ParseDict({"payloads": body.payloads}, Payloads())
    except json_format.ParseError:
        raise Unprocessable("the payloads are not in Temporal's JSON form") from None
    return list(message.payloads)


def _dump(payloads: list[Payload]) -> dict[str, Any]:
    return json_format.MessageToDict(Payloads(payloads=payloads))


async def _run(
    request: Request,
    runtime: Runtime,
    principal: Principal,
    ctx: RequestContext,
    body: PayloadsBody,
    *,
    decode: bool,
) -> dict[str, Any]:
    async with runtime.gatekeeper.access_async(
        principal=principal,
        event_type=AuditEventType.READ if decode else AuditEventType.UPDATE,
        action="codec.decode" if decode else "codec.encode",
        purpose="operations",
        ctx=ctx,
    ) as access:
        decision = access.decide(action=policy.Action.DECODE_PAYLOADS, case=None, consent=None)
        if not decision.allowed:
            raise Forbidden("you may not decode workflow payloads")
        codec = EncryptionCodec(runtime.keyring, runtime.payload_keys)
        payloads = _parse(body)
        try:
            out = await (codec.decode(payloads) if decode else codec.encode(payloads))
        except Exception:  # noqa: BLE001 - any failure to decrypt is the caller's input
            raise Unprocessable("the payloads could not be processed") from None
        return _dump(out)


@router.post("/decode")
async def decode(
    request: Request,
    body: PayloadsBody,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    ctx: ContextDep,
) -> dict[str, Any]:
    """Decrypt payloads for the Temporal UI (platform administrators only)."""
    return await _run(request, runtime, principal, ctx, body, decode=True)


@router.post("/encode")
async def encode(
    request: Request,
    body: PayloadsBody,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    ctx: ContextDep,
) -> dict[str, Any]:
    """Encrypt payloads (e.g. a signal typed in the Temporal UI); administrators only."""
    return await _run(request, runtime, principal, ctx, body, decode=False)
