"""Exporters, installed as ``agentd.exporters``."""
