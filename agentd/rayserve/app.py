"""``agentd serve --ray``: start (or join) Ray, deploy the agentd application, report the proxy's address.

The application is one ingress deployment (:class:`~agentd.rayserve.ingress.Ingress`)
plus one deployment per model (:class:`~agentd.rayserve.replica.ModelReplica`,
``model-<name>``, ``replicas`` each) and a named actor for sessions
(:class:`~agentd.rayserve.sessions.SessionDirectory`). Ray Serve's gRPC proxy
serves the ``agentd.v1`` services from their generated ``add_*_to_server``
functions, so clients speak the same proto to it as to the daemon.

Without an address a local Ray instance is started on 127.0.0.1 (its
dashboard off). Ray Serve 2.60 binds its gRPC proxy to every interface and has
no option to change that; for the local instance a worker set-up hook
(:mod:`agentd.rayserve.loopback`) binds it to 127.0.0.1 instead, so nothing
listens beyond loopback unauthenticated. Remote clients reach the application
through agentd's own listener in front of the proxy (TLS and a token, as for the
daemon: :mod:`agentd.server.forward`). On a real cluster, Ray's own ports must
stay on a private network, as Ray's security guide requires.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from agentd.errors import AgentdError

log = logging.getLogger(__name__)

APP_NAME = "agentd"
NAMESPACE = "agentd"
SERVICER_FUNCTIONS = [
    "agentd.v1.inference_pb2_grpc.add_InferenceServicer_to_server",
    "agentd.v1.models_pb2_grpc.add_ModelsServicer_to_server",
    "agentd.v1.agent_pb2_grpc.add_AgentServicer_to_server",
]


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide: ``agentd serve --ray [ADDRESS] --replicas N``."""

    #: A running cluster (``ray://...`` or ``host:port``, or ``auto``); None starts a local instance.
    address: str | None = None
    #: Replicas of every model deployment (with ``max_replicas``: the fewest Ray scales down to).
    replicas: int = 1
    #: More than ``replicas``: Ray Serve autoscales each model between the two on its queue length.
    max_replicas: int = 0
    #: The gRPC proxy's port; 0 picks a free one.
    grpc_port: int = 0
    #: CPUs Ray reserves for each model replica (0: replicas share what the node has).
    replica_cpus: float = 0.0
    #: Where the agent deployment keeps its journal, memories and credentials; None deploys no agent.
    agent_home: str | None = None
    #: The agent's planner by name (None: the highest-ranked) and whether it plans from templates.
    planner: str | None = None
    plan_cache: bool = True


@dataclass(frozen=True)
class RayApplication:
    """What :func:`deploy` started."""

    #: What clients dial: the proxy, ``127.0.0.1:PORT``.
    target: str
    models: tuple[str, ...]
    replicas: int
    #: Ray was started here (and stops with :func:`shutdown`), not joined.
    local: bool = True
    #: The session directory's handle: held here, since Ray ends an actor nothing refers to.
    directory: Any = field(default=None, compare=False, repr=False)


def serving_settings(settings: dict[str, Any], sessions: Any) -> Any:
    """A replica's :class:`ServingSettings` from the plain dict :func:`deploy` ships to it."""
    from agentd.server.served import ServingSettings

    threads = settings.pop("threads", None)
    if threads:
        from agentd.threads import apply

        apply(threads)
    return ServingSettings(sessions=sessions, **settings)


def deploy(sources: Sequence[Any], settings: Any, options: RayOptions) -> RayApplication:
    """Start or join Ray, deploy the application and wait until it serves; see the module doc."""
    import ray
    from ray import serve
    from ray.serve.config import gRPCOptions

    if not sources:
        raise AgentdError("agentd serve --ray needs at least one model (--model NAME=PATH)")
    port = options.grpc_port or _free_port()
    replicas = max(1, options.replicas)
    if options.address is None:
        cpus = os.cpu_count() or 1
        ray.init(
            address="local", namespace=NAMESPACE, include_dashboard=False, log_to_driver=False,
            _node_ip_address="127.0.0.1", num_cpus=max(cpus, 2),
            runtime_env={"worker_process_setup_hook": "agentd.rayserve.loopback.bind_proxies_to_loopback"},
        )
    else:
        try:
            ray.init(address=options.address, namespace=NAMESPACE, log_to_driver=False)
        except (ValueError, ConnectionError) as exc:
            raise AgentdError(f"cannot join the Ray cluster at {options.address!r}: {exc}") from None
    serve.start(
        http_options={"host": "127.0.0.1", "port": _free_port()},
        grpc_options=gRPCOptions(port=port, grpc_servicer_functions=SERVICER_FUNCTIONS),
    )
    plain = _plain_settings(settings, replicas * len(sources))
    agent = {"home": options.agent_home, "planner": options.planner, "plan_cache": options.plan_cache, "port": port} if options.agent_home else None
    application, directory = _application(
        {source.name: str(Path(source.path).expanduser().absolute()) for source in sources}, replicas, options.replica_cpus, plain,
        agent=agent, max_replicas=options.max_replicas,
    )
    serve.run(application, name=APP_NAME, route_prefix="/")
    return RayApplication(f"127.0.0.1:{port}", tuple(source.name for source in sources), replicas, options.address is None, directory)


def build(args: dict[str, Any]) -> Any:
    """The application for a Ray Serve config file or a KubeRay ``RayService`` (``import_path:
    agentd.rayserve.app:build``); ``args``: ``models`` (name: path on every node), ``replicas``,
    ``max_replicas`` (autoscaling), ``replica_cpus``, ``agent_home`` and ``grpc_port`` (the agent
    deployment), and any ``agentd serve`` engine setting (``max_batch``, ``session_ttl``...).
    See docs/ray.md."""
    from agentd.server.served import ServingSettings
    from agentd.server.sessions import SessionSettings

    models = dict(args.get("models") or {})
    if not models:
        raise AgentdError("the agentd application needs 'models': {name: path}")
    engine = {key: args[key] for key in ("max_batch", "max_queue", "prefill_chunk", "prefix_cache_bytes", "quant") if key in args}
    sessions = SessionSettings(ttl=float(args.get("session_ttl", 1800.0)), budget_bytes=int(args.get("session_budget", 512 * 2**20)),
                               directory=args.get("sessions_dir"))
    replicas = int(args.get("replicas", 1))
    plain = _plain_settings(ServingSettings(sessions=sessions, **engine), replicas * len(models), threads=args.get("threads"))
    agent = None
    if args.get("agent_home"):
        agent = {"home": args["agent_home"], "planner": args.get("planner"), "plan_cache": bool(args.get("plan_cache", True)),
                 "port": int(args.get("grpc_port", 9000))}
    application, _ = _application(
        models, replicas, float(args.get("replica_cpus", 1.0)), plain, detached=True, agent=agent, max_replicas=int(args.get("max_replicas", 0))
    )
    return application


def _application(
    models: dict[str, str], replicas: int, replica_cpus: float, plain: dict[str, Any], *, detached: bool = False,
    agent: dict[str, Any] | None = None, max_replicas: int = 0,
) -> tuple[Any, Any]:
    """The bound application (ingress over one deployment per model, and the agent's) and the session directory's handle."""
    import ray
    from ray import serve

    from agentd.rayserve.agent import AgentReplica
    from agentd.rayserve.ingress import Ingress
    from agentd.rayserve.replica import ModelReplica
    from agentd.rayserve.sessions import DIRECTORY_NAME, DIRECTORY_NAMESPACE, SessionDirectory

    # Detached when a config file deploys the application: no agentd process holds its handle then.
    directory = ray.remote(SessionDirectory).options(
        name=DIRECTORY_NAME, namespace=DIRECTORY_NAMESPACE, get_if_exists=True, num_cpus=0, max_restarts=-1,
        lifetime="detached" if detached else None,
    ).remote(plain["sessions"]["ttl"])
    ray.get(directory.sessions.remote())  # up before any replica asks for it
    if max_replicas > replicas:  # scale on queue length: a replica is "full" at a batch's worth of requests
        scaling: dict[str, Any] = {"autoscaling_config": {
            "min_replicas": replicas, "initial_replicas": replicas, "max_replicas": max_replicas,
            "target_ongoing_requests": plain["max_batch"],
        }}
    else:
        scaling = {"num_replicas": replicas}
    handles = {}
    for name, path in models.items():
        deployment = serve.deployment(
            ModelReplica, name=f"model-{name}", **scaling,
            ray_actor_options={"num_cpus": replica_cpus}, health_check_period_s=2, health_check_timeout_s=30,
            max_ongoing_requests=plain["max_batch"] + plain["max_queue"],
        )
        handles[name] = deployment.bind(name, path, plain, DIRECTORY_NAME)
    agent_handle = None
    if agent is not None:
        # One replica: its journal is a file on its node. Its planner reaches the models through the
        # proxy on that node, so Ray routes each generation like any client's.
        deployment = serve.deployment(AgentReplica, name="agent", num_replicas=1, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000)
        agent_handle = deployment.bind(agent["home"], f"127.0.0.1:{agent['port']}", agent["planner"], agent["plan_cache"])
    ingress = serve.deployment(Ingress, name="ingress", ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000)
    return ingress.bind(handles, list(models), DIRECTORY_NAME, plain["sessions"]["directory"], agent_handle), directory


def shutdown(app: RayApplication | None = None) -> None:
    """Take the application down and disconnect; a local instance stops with it (no need to drain
    Serve's controller first, which takes up to 30 s)."""
    import ray
    from ray import serve

    try:
        if app is None or not app.local:
            serve.delete(APP_NAME)
    finally:
        ray.shutdown()


def _plain_settings(settings: Any, replicas_in_all: int, threads: int | None = None) -> dict[str, Any]:
    """``ServingSettings`` as a dict that pickles anywhere, each replica's thread share included."""
    fields = asdict(settings)
    fields.pop("model_dirs", None)  # LoadModel is not served behind Ray
    fields["sessions"]["directory"] = str(settings.sessions.resolved_directory())
    # Replicas on one node share its cores: each gets its part, not a pool of all of them.
    fields["threads"] = threads or max(1, (os.cpu_count() or 1) // max(1, replicas_in_all))
    return fields


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
