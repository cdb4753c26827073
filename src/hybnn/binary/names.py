"""Names of the binary training methods (no torch import; see :mod:`hybnn.binary.methods`)."""

METHODS = ("ste", "xnor", "rebnn", "rebnn-const")
SCALINGS = ("none", "xnor", "learned")  # scaling factors of a binary layer's weights
