"""What continual replay keeps between tasks, in real bytes: stored codes or bit frequencies.

- :class:`ReplayMemory`: a class-balanced reservoir of packed codes (25 B for 200 bits) plus
  a one-byte label each, in arrays preallocated to the byte budget, so it can never hold more.
- :class:`BernoulliCodeModel`: per class, the frequency of every bit being 1, quantised to
  ``bits`` bits and bit-packed (200 bits x 4 = 100 B per class); new codes are sampled from
  the product of those Bernoullis (no sample is stored).
"""

from __future__ import annotations

import numpy as np

from hybnn.errors import DataError
from hybnn.pipeline.codes import pack_code_bits, unpack_code_bits

LABEL_BYTES = 1  # labels are stored as uint8


class ReplayMemory:
    """Class-balanced reservoir sampling (CBRS, Chrysakis & Moens 2020) under a byte budget.

    While there is room every code is kept. When full, a code of a class that is not among
    the largest in memory replaces a random code of a largest class; a code of a largest
    class replaces a random code of its own class with probability stored/seen for that
    class (plain reservoir sampling within the class). The memory ends up balanced, and each
    class's codes are a uniform sample of that class's stream.
    """

    def __init__(self, budget_bytes: int, code_bytes: int, seed: int = 0) -> None:
        if code_bytes < 1 or budget_bytes < 0:
            raise DataError(f"replay memory needs code_bytes >= 1 and a budget >= 0 "
                            f"(got {code_bytes}, {budget_bytes})")
        self.budget_bytes = int(budget_bytes)
        self.capacity = self.budget_bytes // (code_bytes + LABEL_BYTES)
        self.packed = np.zeros((self.capacity, code_bytes), dtype=np.uint8)
        self.labels = np.zeros(self.capacity, dtype=np.uint8)
        self.size = 0
        self.seen: dict[int, int] = {}
        self.rng = np.random.default_rng(seed)

    @property
    def nbytes(self) -> int:
        """Bytes the memory occupies (its preallocated arrays; never above the budget)."""
        return int(self.packed.nbytes + self.labels.nbytes)

    def add(self, packed: np.ndarray, labels: np.ndarray) -> None:
        """Stream ``packed`` codes (N, code_bytes) with class ``labels`` in random order."""
        if labels.size and (labels.min() < 0 or labels.max() > np.iinfo(np.uint8).max):
            raise DataError("replay memory stores labels 0..255")
        for i in self.rng.permutation(len(labels)):
            self._offer(packed[i], int(labels[i]))

    def _offer(self, code: np.ndarray, label: int) -> None:
        self.seen[label] = self.seen.get(label, 0) + 1
        if self.capacity == 0:
            return
        if self.size < self.capacity:
            slot = self.size
            self.size += 1
        else:
            counts = np.bincount(self.labels, minlength=label + 1)
            largest = np.flatnonzero(counts == counts.max())
            if label not in largest:
                slot = int(self.rng.choice(np.flatnonzero(np.isin(self.labels, largest))))
            elif self.rng.random() < counts[label] / self.seen[label]:
                slot = int(self.rng.choice(np.flatnonzero(self.labels == label)))
            else:
                return
        self.packed[slot] = code
        self.labels[slot] = label

    def codes_of(self, label: int) -> np.ndarray:
        """The stored packed codes of one class."""
        return self.packed[:self.size][self.labels[:self.size] == label]

    def classes(self) -> list[int]:
        return sorted(int(c) for c in np.unique(self.labels[:self.size]))


def frequency_bits(budget_bytes: int, num_classes: int, num_bits: int) -> int:
    """The most bits per frequency (up to 8) with which ``num_classes`` classes of
    ``num_bits`` frequencies fit in ``budget_bytes``."""
    for bits in range(8, 0, -1):
        if num_classes * ((num_bits * bits + 7) // 8) <= budget_bytes:
            return bits
    raise DataError(f"a memory budget of {budget_bytes} B cannot hold {num_classes} classes of "
                    f"{num_bits} bit frequencies even at 1 bit each; raise --memory-fraction")


class BernoulliCodeModel:
    """Per-class P(bit = 1), quantised to ``bits`` bits per frequency and stored bit-packed.

    A frequency f is stored as round(f * (2^bits - 1)); sampling draws each bit of a code
    independently with the dequantised probability (a naive-Bayes model of the class).
    """

    def __init__(self, num_bits: int, bits: int = 4) -> None:
        if not 1 <= bits <= 8 or num_bits < 1:
            raise DataError(f"frequencies are stored with 1..8 bits each (got {bits})")
        self.num_bits = num_bits
        self.bits = bits
        self.levels = (1 << bits) - 1
        self.stored: dict[int, np.ndarray] = {}  # class -> packed quantised frequencies

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self.stored.values()))

    def bytes_per_class(self) -> int:
        return (self.num_bits * self.bits + 7) // 8

    def fit(self, packed: np.ndarray, labels: np.ndarray) -> None:
        """Store the bit frequencies of every class in ``labels`` (packed codes in)."""
        bits = unpack_code_bits(packed, self.num_bits)
        for label in np.unique(labels):
            freq = bits[labels == label].mean(axis=0)
            q = np.rint(freq * self.levels).astype(np.uint8)
            # each level as `bits` big-endian bits, concatenated and packed into bytes
            planes = np.unpackbits(q[:, None], axis=1)[:, 8 - self.bits:]
            self.stored[int(label)] = pack_code_bits(planes.reshape(1, -1))[0]

    def frequencies(self, label: int) -> np.ndarray:
        """The dequantised P(bit = 1) of one class, shape (num_bits,)."""
        flat = np.unpackbits(self.stored[label], count=self.num_bits * self.bits)
        planes = flat.reshape(self.num_bits, self.bits)
        weights = 1 << np.arange(self.bits - 1, -1, -1)
        return (planes @ weights) / self.levels

    def sample(self, label: int, n: int, rng: np.random.Generator,
               temperature: float = 1.0) -> np.ndarray:
        """``n`` packed codes of class ``label``, bits drawn independently with
        P(bit = 1) = sigmoid(logit(f) / temperature): above 1, flatter than the stored
        frequencies f (more varied codes); 1: f itself."""
        p = self.frequencies(label)
        if temperature != 1.0:
            logit = np.log(np.clip(p, 1e-6, 1.0)) - np.log(np.clip(1.0 - p, 1e-6, 1.0))
            p = 1.0 / (1.0 + np.exp(-logit / temperature))
        bits = rng.random((n, self.num_bits)) < p
        return pack_code_bits(bits)

    def classes(self) -> list[int]:
        return sorted(self.stored)
