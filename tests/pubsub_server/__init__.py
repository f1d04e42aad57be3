"""In-memory Pub/Sub gRPC server for tests, with fault injection.

See `tests.pubsub_server.server` for what it implements, and
`tests.pubsub_server.fixtures` for the pytest fixture factory.
"""

from tests.pubsub_server.faults import FaultMode, FaultSettings
from tests.pubsub_server.server import PublishedMessage, PubSubTestServer

__all__ = ["FaultMode", "FaultSettings", "PubSubTestServer", "PublishedMessage"]
