"""agentd on Ray Serve: the same ``agentd.v1`` services, models as deployments with replicas.

:mod:`.app` deploys, :mod:`.ingress` routes each RPC to a model's deployment,
:mod:`.replica` runs agentd's engine in each replica, :mod:`.sessions` lets a
session continue on any replica, :mod:`.loopback` keeps a local proxy on
loopback. Needs the ``ray`` extra (``pip install 'agentd[ray]'``).
"""
