"""Type stub of the C extension (src/hybnn/engine/csrc): its functions check their own
arguments and raise ValueError/TypeError; see hybnn.engine.ops and runtime for the calls."""

from typing import Any

MAX_DIM: int
MAX_ELEMENTS: int

def __getattr__(name: str) -> Any: ...
