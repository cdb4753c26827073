"""hybnn: hybrid binary neural networks (HyBNN, FedHyBNN, ReBNN) and a packed inference engine."""

from hybnn.errors import HybnnError

__version__ = "0.1.0"
__all__ = ["HybnnError", "__version__"]
