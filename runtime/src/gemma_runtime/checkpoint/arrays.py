"""The arrays of an Orbax PyTree checkpoint (ours or an official Gemma release), read to the host one at
a time: each :class:`Stored` knows its shape and dtype from the metadata and reads its values (a partial
restore of that one array) only when asked, so a loader holds one tensor at a time, never the tree."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from gemma_runtime.checkpoint.params import CheckpointError


class Stored:
    """One array of a checkpoint: ``shape`` and ``dtype`` now, the values from ``read()`` or
    ``np.asarray(stored)``."""

    def __init__(self, checkpointer: Any, path: Path, keys: tuple[str, ...], shape: Any, dtype: Any) -> None:
        self._checkpointer, self._path, self.keys = checkpointer, path, keys
        self.shape: tuple[int, ...] = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)

    def read(self) -> np.ndarray:
        import orbax.checkpoint as ocp

        def nested(leaf: Any) -> dict[str, Any]:
            tree: Any = leaf
            for key in reversed(self.keys):
                tree = {key: tree}
            return dict(tree)

        restored: Any = self._checkpointer.restore(
            self._path,
            args=ocp.args.PyTreeRestore(
                item=nested(0),
                restore_args=nested(ocp.RestoreArgs(restore_type=np.ndarray)),
                partial_restore=True,
            ),
        )
        for key in self.keys:
            restored = restored[key]
        return np.asarray(restored)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        array = self.read()
        return array if dtype is None else array.astype(dtype)


def stored_tree(path: Path) -> dict[str, Any]:
    """The checkpoint's tree of nested dicts, with a :class:`Stored` for each array; nothing is read."""
    import orbax.checkpoint as ocp

    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint directory")
    path = path.absolute()
    checkpointer = ocp.PyTreeCheckpointer()
    metadata = checkpointer.metadata(path)
    tree = getattr(metadata, "item_metadata", metadata)
    tree = getattr(tree, "tree", tree)

    def walk(node: Any, keys: tuple[str, ...]) -> Any:
        if hasattr(node, "shape"):
            return Stored(checkpointer, path, keys, node.shape, node.dtype)
        if not isinstance(node, Mapping):
            raise CheckpointError(f"{path}: unexpected entry {'/'.join(keys)} ({type(node).__name__})")
        return {str(key): walk(value, (*keys, str(key))) for key, value in node.items()}

    return dict(walk(dict(tree), ()))
