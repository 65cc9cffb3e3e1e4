"""Suite-wide settings: deterministic projection kernels, no writes to the user's cache.

The daemon measures which projection kernel is faster on the CPU at hand
(:mod:`agentd.plugins.kernel_choice`); a verdict that depends on timing would make
tests that look at weight layouts flaky, so the suite forces the packed kernel
(its behaviour before the measurement existed) and keeps the kernel cache in a
temporary directory. ``tests/test_kernel_choice.py`` tests the measuring itself.
Daemons the tests start inherit both settings.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("AGENTD_PROJECTION", "packed")
os.environ.setdefault("AGENTD_CACHE_DIR", tempfile.mkdtemp(prefix="agentd-test-cache-"))
