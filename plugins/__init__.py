"""Built-in agentd plugins, installed as ``agentd.plugins``."""
