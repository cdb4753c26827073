"""FedHyBNN on Flower: partitions, update encodings, client/server apps, simulation, deployment.

Only :mod:`partition`, :mod:`encoding` and :mod:`config` work without Flower; the rest
needs the ``fed`` extra (``pip install hybnn[fed]``, i.e. ``flwr[simulation,dp]==1.41.0``).
Entry points: :func:`hybnn.federated.simulation.federate` (``hybnn federate``) and
:func:`hybnn.federated.deploy.deploy` (``hybnn federate --deploy``).
"""
