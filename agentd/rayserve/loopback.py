"""A Ray worker set-up hook: Serve's gRPC proxy listens on 127.0.0.1, not on every interface.

Ray Serve 2.60 binds its gRPC proxy to ``[::]:PORT`` (unauthenticated) and has
no option for the host. For the local instance ``agentd serve --ray`` starts,
this hook (``runtime_env={"worker_process_setup_hook": ...}``, run in every
worker before its first task) rebinds it to loopback, so the box offers nothing
unauthenticated beyond itself; clients elsewhere come in through agentd's TLS
and token listener in front of it. The patched function is Ray's own seam for
adding the proxy's address; ``tests/test_ray_serve.py`` checks the proxy
refuses connections on a non-loopback address.
"""

from __future__ import annotations


def bind_proxies_to_loopback() -> None:
    try:
        from ray.serve._private import default_impl
    except ImportError:  # a worker without Serve: nothing to bind
        return
    original = default_impl.add_grpc_address

    def add_loopback_address(server, address: str) -> None:
        host, _, port = address.rpartition(":")
        original(server, f"127.0.0.1:{port}" if host in ("[::]", "0.0.0.0", "") else address)

    default_impl.add_grpc_address = add_loopback_address
