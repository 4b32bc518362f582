"""Serving: the robot HTTP API around a `Policy`.

Only light modules are imported eagerly here: `protocol` (numpy + msgpack,
shared with the robot client). The FastAPI app (`app`), the Ray Serve
deployment (`deployment`) and the replay buffer (`replay_buffer`) are imported
by name where they are used, so `import syvla.client` never loads torch, ray
or fastapi.
"""

from syvla.serving.protocol import ProtocolError  # noqa: F401
