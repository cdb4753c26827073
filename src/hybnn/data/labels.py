"""Label spaces: what each output index of a model means in the user's terms.

A task relabels its classes 0..k-1 (``2v3`` keeps digits 2 and 3 as indices 0 and 1). The
label space records, per index, the label the user's data gave it and, where the source has
them, a class name, so a prediction reads ``2`` or ``Pullover`` rather than ``class 0``. It
travels with every code store, model and engine file (``meta["label_space"]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hybnn.errors import ArtifactError, DataError

FASHION_MNIST_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                       "Shirt", "Sneaker", "Bag", "Ankle boot")
DIGIT_NAMES = tuple(str(d) for d in range(10))
SOURCE_NAMES = {"fashion-mnist": FASHION_MNIST_NAMES, "mnist": DIGIT_NAMES,
                "mnist-5k": DIGIT_NAMES, "digits": DIGIT_NAMES, "digits-28": DIGIT_NAMES}
MAX_NAME_LENGTH = 200
MAX_LABEL = 2**31 - 1  # a label fits an int32 (the C export's type)


@dataclass(frozen=True)
class LabelSpace:
    """``labels[i]``: the original label of output index ``i``; ``names[i]``: its name.

    Labels are distinct integers in ``[0, MAX_LABEL]``; names are printable text (no
    control characters, so no newline or terminal escape), 1 to ``MAX_NAME_LENGTH``
    characters: a name is printed as it is, so one that is not is refused (:class:`DataError`
    from data, :class:`ArtifactError` from an artifact's metadata)."""

    labels: tuple[int, ...]
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.labels) != len(self.names):
            raise ValueError("a label space needs one name per label")
        for label in self.labels:
            if type(label) is not int or not 0 <= label <= MAX_LABEL:
                raise DataError(f"class label {repr(label)[:40]} is not an integer in "
                                f"[0, {MAX_LABEL}]")
        if len(set(self.labels)) != len(self.labels):
            raise DataError(f"class labels {list(self.labels)[:20]} are not distinct")
        for name in self.names:
            if not (isinstance(name, str) and 0 < len(name) <= MAX_NAME_LENGTH
                    and name.isprintable()):
                shown = repr(name[:40]) + ("..." if len(name) > 40 else "")
                raise DataError(f"class name {shown} ({len(name)} characters) is not 1 to "
                                f"{MAX_NAME_LENGTH} printable characters (no control "
                                "characters, newlines or terminal escapes)")

    @classmethod
    def identity(cls, num_classes: int, names: Sequence[str] | None = None) -> LabelSpace:
        """Indices that are their own labels, named ``names`` or by their number."""
        labels = tuple(range(num_classes))
        if names is not None and len(names) != num_classes:
            raise ValueError(f"{len(names)} class names for {num_classes} classes")
        return cls(labels, tuple(names) if names is not None else tuple(map(str, labels)))

    def select(self, indices: Sequence[int]) -> LabelSpace:
        """The label space of a task that keeps ``indices`` (in this order)."""
        return LabelSpace(tuple(self.labels[i] for i in indices),
                          tuple(self.names[i] for i in indices))

    def __len__(self) -> int:
        return len(self.labels)

    def describe(self, index: int) -> str:
        """The name of output ``index``, e.g. ``2`` or ``Pullover``."""
        return self.names[index]

    def to_json(self) -> dict[str, Any]:
        return {"labels": list(self.labels), "names": list(self.names)}

    @classmethod
    def from_json(cls, obj: Any, num_classes: int) -> LabelSpace:
        """Read ``meta["label_space"]``; artifacts without one get numbered indices. Every
        label and name is checked as :class:`LabelSpace` says (none is changed to fit)."""
        if obj is None:
            return cls.identity(num_classes)
        labels = obj.get("labels") if isinstance(obj, dict) else None
        names = obj.get("names") if isinstance(obj, dict) else None
        if not (isinstance(labels, list) and isinstance(names, list)):
            raise ArtifactError("invalid label space in metadata (it must be an object with "
                                "the lists 'labels' and 'names')")
        if len(labels) != len(names):
            raise ArtifactError(f"invalid label space in metadata ({len(labels)} labels, "
                                f"{len(names)} names)")
        if len(labels) != num_classes:
            raise ArtifactError(f"label space has {len(labels)} entries for a model with "
                                f"{num_classes} outputs")
        if not all(isinstance(n, str) for n in names):
            raise ArtifactError("invalid label space in metadata (class names must be strings)")
        try:
            return cls(tuple(labels), tuple(names))
        except (DataError, ValueError) as exc:
            raise ArtifactError(f"invalid label space in metadata ({exc})") from None
