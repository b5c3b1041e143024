"""What the Breakout probes share (brick_memory.py, ball_tracking.py): a Breakout run opened with
recordings at its resolution, and the rows of a frame that the brick wall fills."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from engine.dataset import open_dataset
from engine.errors import UserError
from models.checkpoint import load_run
from models.data import Recordings


def open_breakout(checkpoint: str, data: str, measures: str) -> tuple[Any, Recordings]:
    """The run at `checkpoint` and the recordings in `data`, both of Breakout, or one error line
    naming what this probe `measures` (e.g. "Breakout's ball")."""
    run = load_run(checkpoint)
    if run.spec.name != "breakout":
        raise UserError(f"{checkpoint} is a {run.spec.name} model; this measures {measures}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        recs = Recordings(open_dataset(data), int(run.model.resolution), sorted(run.event_bank),  # type: ignore[arg-type]
                          progress=False)
    if recs.spec.name != "breakout":
        raise UserError(f"{data} holds {recs.spec.name}, not Breakout")
    return run, recs


def brick_rows(frame: np.ndarray) -> list[int]:
    """Rows of a (3, R, R) uint8 frame where the wall is bright across the middle (the wall lies
    between a sixth and half of the height)."""
    gray = np.asarray(frame, np.float32).mean(0)  # (R, R)
    r = gray.shape[0]
    profile = gray[:, r // 6: -r // 6].mean(1)
    return [y for y in range(r // 6, r // 2) if profile[y] > 40]
