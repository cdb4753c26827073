#!/usr/bin/env sh
# A real local Flower deployment of FedHyBNN: flower-superlink, N flower-supernode processes
# and `flwr run` on 127.0.0.1, stopped afterwards. Options as `hybnn federate`, e.g.
#   scripts/fed_deploy_local.sh --data digits --rounds 2 --out runs/fed-deploy
exec hybnn federate --deploy "$@"
