"""The models the emulator knows: the live ``/models`` list recorded in January 2026 (fact sheet §7).

Version suffixes and context sizes of models other than ``GigaChat`` are invented but shaped like the real
ones (``GigaChat`` -> ``GigaChat:2.0.28.2`` is recorded).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelInfo:
    """One model: its public id, ``type`` (chat, embedder, aicheck, filter), build and context size."""

    id: str
    type: str
    version: str
    context_tokens: int

    @property
    def versioned_name(self) -> str:
        """The name chat answers carry in ``model``, e.g. ``GigaChat:2.0.28.2``."""
        return f"{self.id}:{self.version}"

    def to_json(self) -> dict[str, object]:
        """Return the ``/models`` item shape."""
        return {"id": self.id, "object": "model", "owned_by": "salutedevices", "type": self.type}


_CHAT_BUILDS = {
    "GigaChat": "2.0.28.2",
    "GigaChat-2": "2.0.28.2",
    "GigaChat-2-Pro": "2.0.28.2",
    "GigaChat-2-Max": "2.0.28.2",
    "GigaChat-Plus": "2.0.28.2",
    "GigaChat-Pro": "2.0.28.2",
    "GigaChat-Max": "2.0.28.2",
}

CATALOG: tuple[ModelInfo, ...] = (
    *(ModelInfo(name, "chat", build, 131072) for name, build in _CHAT_BUILDS.items()),
    *(
        ModelInfo(f"{name}-preview", "chat", "2.0.30.1", 131072)
        for name in _CHAT_BUILDS
        if "Plus" not in name
    ),
    ModelInfo("GigaFilter", "filter", "1.0.0", 8192),
    ModelInfo("GigaCheckClassification", "aicheck", "1.0.0", 8192),
    ModelInfo("GigaCheckDetection", "aicheck", "1.0.0", 8192),
    ModelInfo("Embeddings", "embedder", "1.0.0", 512),
    ModelInfo("Embeddings-2", "embedder", "1.0.0", 512),
    ModelInfo("EmbeddingsGigaR", "embedder", "1.0.0", 4096),
    ModelInfo("GigaEmbeddings-3B-2025-09", "embedder", "1.0.0", 4096),
)


def find_model(name: str) -> ModelInfo | None:
    """Return the model with exactly this id, or ``None``."""
    return next((model for model in CATALOG if model.id == name), None)
