"""``hybnn pki``: certificates and keys for a deployment over several machines."""

from __future__ import annotations

from hybnn.api.options import PkiOptions
from hybnn.federated.pki import Credentials, generate_deployment


def pki(opts: PkiOptions) -> Credentials:
    """A CA, a SuperLink certificate and key for ``opts.server_name`` and ``opts.nodes``
    SuperNode key pairs in the new directory ``opts.out``; the files written."""
    return generate_deployment(opts.out, opts.server_name, opts.nodes)
