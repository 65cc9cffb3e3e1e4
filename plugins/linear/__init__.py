"""agentd linear backends (registered in the linear helper's work)."""

from agentd.hookspecs import hookimpl


@hookimpl
def register_backends(register) -> None:
    """Filled in when the backends land."""
