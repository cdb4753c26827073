"""User-facing errors: each carries one line the CLI prints without a traceback."""


class HybnnError(Exception):
    """Base class for errors caused by the user's input, files or environment."""


class DataError(HybnnError):
    """A data file or array is missing, corrupt, truncated or of the wrong shape."""


class ArtifactError(HybnnError):
    """An artifact (encoder, code store, model, engine file) is missing, corrupt or foreign."""


class FingerprintMismatch(ArtifactError):
    """Two artifacts that must come from the same encoder do not."""


class HybnnWarning(UserWarning):
    """Work goes on, but the user should know (the CLI prints ``hybnn: warning: ...``)."""


class CredentialError(HybnnError):
    """A certificate or key is missing, malformed, expired, or does not match its pair."""
