"""``hybnn partition``: a federation's partition as one data file per node."""

from __future__ import annotations

from hybnn.api.options import PartitionOptions
from hybnn.federated.node_files import NodeFiles, write_node_files


def partition(opts: PartitionOptions) -> NodeFiles:
    """Node i's share of ``opts.data`` in ``opts.out/node-<i>.npz``, the test split in
    ``server-test.npz``, and ``partitions.json`` describing them."""
    return write_node_files(opts.fed_config(), opts.out)
