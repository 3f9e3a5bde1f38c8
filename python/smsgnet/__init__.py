"""smsgnet: encrypted peer-to-peer WebSocket transport."""
from smsgnet import _core
from smsgnet.exceptions import *  # noqa: F401,F403
