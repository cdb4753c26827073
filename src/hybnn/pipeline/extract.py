"""Phase 2, binary feature extraction: images -> frozen encoder -> packed code store."""

from __future__ import annotations

from typing import Any

from hybnn.data.dataset import Dataset
from hybnn.encoders import ENCODE_BATCH, CodeEncoder
from hybnn.pipeline.codes import CodeStore, pack_code_bits


def encode_to_codes(encoder: CodeEncoder, data: Dataset, meta: dict[str, Any] | None = None,
                    batch_size: int = ENCODE_BATCH) -> CodeStore:
    """Encode every image of ``data`` into a bit-packed :class:`CodeStore`."""
    bits = encoder.encode(data.x, batch_size)
    info = {"source": data.name, "num_classes": data.num_classes,
            "label_space": data.label_space.to_json(), **(meta or {})}
    return CodeStore(pack_code_bits(bits), data.y.copy(), encoder.latent_bits,
                     encoder.fingerprint, info)
