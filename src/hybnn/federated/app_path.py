"""The installed FedHyBNN Flower App's directory, for ``flwr run`` after ``pip install``:

    flwr run "$(python -m hybnn.federated.app_path)" <connection> --run-config '...'

It holds only the app's ``pyproject.toml`` (components and run-config defaults); the code
is the installed ``hybnn`` package. Importing this module imports nothing heavy.
"""

from __future__ import annotations

from pathlib import Path

APP_DIR = Path(__file__).resolve().parent / "flower_app"


def app_path() -> Path:
    """The directory ``flwr run`` takes."""
    return APP_DIR


if __name__ == "__main__":
    print(app_path())
