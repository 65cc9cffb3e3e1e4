"""agentd ssm backends (registered in the ssm helper's work)."""

from agentd.hookspecs import hookimpl


@hookimpl
def register_backends(register) -> None:
    """Filled in when the backends land."""
