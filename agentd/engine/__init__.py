"""The serving engine: continuous batching of concurrent generations over one backend.

    engine = Engine.from_model(model, max_batch=16)
    handle = engine.submit(prompt_ids, params)
    for event in handle:            # or: async for event in handle.aiter()
        ...
    engine.close(drain=True, grace=5.0)
"""

from agentd.engine.handle import RequestHandle, RetainedState
from agentd.engine.prefix_cache import PrefixCache
from agentd.engine.scheduler import Engine

__all__ = ["Engine", "PrefixCache", "RequestHandle", "RetainedState"]
