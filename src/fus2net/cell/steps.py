"""What the job asks of the step that stands beside it: the clinical step (fus2net.clinical),
built by the CLI and passed to `experiment.job.run_job`, so that the job never imports it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fus2net.cell.context import JobContext
    from fus2net.cell.scoring import CellScores
    from fus2net.cell.summary import CellSummary
    from fus2net.training.fold import FoldResult


@dataclass(frozen=True)
class CellEvaluation:
    """`evaluate(ctx, summary, results, scores)` scores a cell whose folds are all trained
    (calibration, operating points, external sets, the model package); `register_stored(ctx,
    cell_run)` registers a finished cell's stored ensemble."""

    evaluate: Callable[[JobContext, CellSummary, dict[int, FoldResult], CellScores], object]
    register_stored: Callable[[JobContext, str], object]
