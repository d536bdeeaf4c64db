"""Training checkpoints with Orbax: ``<dir>/<step>/state`` (parameters, optimizer state, step) and
``<dir>/<step>/meta`` (JSON: the data position and figures).

Saves are asynchronous (the step loop goes on while a background thread writes) and atomic: Orbax writes
into a temporary folder and renames it when complete, so a crash mid-save leaves the previous
checkpoint the latest one. A save counts as done only once committed: ``committed`` reports a step
when Orbax has finished it on every process and its folder is finalized, never when it starts, so what
the run reports (``/progress``, the log, the metric) can always be restored. Every process calls save
and restore; each writes and reads its own shards.
The state is stored as a flat mapping of readable names (``layers.0.attn.q``, ``opt.1.0.mu...``) so a
checkpoint is inspectable and does not depend on the optimizer's Python classes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from gemma_runtime.train.lora import name_of

log = logging.getLogger(__name__)


def flatten(tree: Any) -> dict[str, Any]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    out = {name_of(path): leaf for path, leaf in leaves}
    if len(out) != len(leaves):
        raise ValueError("two state entries map to the same checkpoint name")
    return out


def unflatten(like: Any, flat: dict[str, Any]) -> Any:
    paths, treedef = jax.tree_util.tree_flatten_with_path(like)
    return jax.tree_util.tree_unflatten(treedef, [flat[name_of(path)] for path, _ in paths])


class Checkpoints:
    """Keep ``keep`` checkpoints in ``directory``; ``due(step)`` says when the interval asks for one."""

    def __init__(self, directory: str | Path, *, interval: int, keep: int) -> None:
        self.directory = str(directory)
        self.interval = interval
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=True, save_interval_steps=1
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))
        self._pending: int | None = None  # a save started and not yet seen committed

    def latest(self) -> int | None:
        step = self._manager.latest_step()
        return None if step is None else int(step)

    def due(self, step: int) -> bool:
        return step % self.interval == 0

    def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
        """Start an asynchronous save (returns once the arrays are copied off the devices)."""
        if self._manager.latest_step() == step:
            return
        args = ocp.args.Composite(state=ocp.args.StandardSave(flatten(state)), meta=ocp.args.JsonSave(meta))
        self._manager.save(step, args=args, force=True)  # first waits for the previous save to commit
        self._pending = step
        log.info("checkpoint: saving step %d to %s", step, self.uri(step))

    def committed(self) -> int | None:
        """The step of a save that has committed since the last call, else None; never blocks. Orbax
        clears its in-progress flag after every process finished (or failed) the save, so a failure is
        raised here and a step is returned only when its folder is finalized."""
        if self._pending is None or self._manager.is_saving_in_progress():
            return None
        step, self._pending = self._pending, None
        self._manager.check_for_errors()
        if not ocp.step.is_checkpoint_finalized(self._manager.directory / str(step)):
            raise RuntimeError(f"checkpoint {self.uri(step)} ended without being committed")
        return step

    def restore(self, step: int, like: Any) -> tuple[Any, dict[str, Any]]:
        """The state saved at ``step``, laid out (shapes, dtypes, shardings) like ``like``."""
        abstract = {
            name: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
            for name, x in flatten(like).items()
        }
        args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
        restored = self._manager.restore(step, args=args)
        return unflatten(like, dict(restored["state"])), dict(restored["meta"])

    def uri(self, step: int) -> str:
        return f"{self.directory.rstrip('/')}/{step}"

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
