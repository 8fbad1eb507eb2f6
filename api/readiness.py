"""What `/readyz` asks of Temporal, and the log where each of its failing checks is named.

The Temporal frontend closes every client connection after about five minutes
(`frontend.keepAliveMaxConnectionAge`, with a jitter of 10 %): it sends an HTTP/2 GOAWAY
and the client opens a new connection. A call that meets that moment fails ("operation
was canceled", "h2 protocol error") although the server is up, and the SDK's own calls
retry it. The gRPC health check does not, unless asked. Asked once without retries, a
readiness probe reported Temporal unavailable in CI while it was serving.
`tests/integration/test_readiness.py` rolls the connections every 100 ms and checks that
no probe says so.
"""

from __future__ import annotations

import logging

from temporalio.client import Client

logger = logging.getLogger(__name__)


async def temporal_serving(client: Client) -> bool:
    """Whether Temporal's workflow service answers that it is serving.

    A transient failure (a connection closing under the call, a dropped packet) is
    retried with the SDK's backoff; the caller bounds the whole in time. False when the
    server answers but the service is not serving (during its start or its stop)."""
    return await client.service_client.check_health(retry=True)
