"""Wire formats: the message envelope, client frames and their schemas, replies, close codes.

Every JSON shape the server emits is built in this package and nowhere else (`shapes`); client
frames are validated here (`frames`); names and values are checked here (`names`). Pure Python:
nothing here imports Django, so the shapes can be read (and reused by tests) without a project.
Use it as one module: `from streaming import protocol`, then `protocol.envelope(...)`.
"""

from streaming.protocol.frames import *  # noqa: F403
from streaming.protocol.frames import __all__ as _frames
from streaming.protocol.names import *  # noqa: F403
from streaming.protocol.names import __all__ as _names
from streaming.protocol.shapes import *  # noqa: F403
from streaming.protocol.shapes import __all__ as _shapes

__all__ = [*_names, *_shapes, *_frames]
