"""What the job asks of the steps that stand beside it: the clinical step (fus2net.clinical),
built by the CLI and passed to `experiment.job.run_job`, so that the job never imports it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from fus2net.cell.context import JobContext
    from fus2net.cell.scoring import CellScores
    from fus2net.cell.summary import CellSummary
    from fus2net.training.fold import FoldResult


class CellEvaluation(Protocol):
    """Scores a cell whose folds are all trained (calibration, operating points, external
    sets, the model package) and registers a finished cell's stored ensemble."""

    def evaluate(
        self,
        ctx: JobContext,
        summary: CellSummary,
        results: dict[int, FoldResult],
        scores: CellScores,
    ) -> object: ...

    def register_stored(self, ctx: JobContext, cell_run: str) -> object: ...
