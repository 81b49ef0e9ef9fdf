"""Thin console entry points; the logic lives in the modules they call."""

from pathlib import Path

# conf/ sits at the repository root (src layout, editable install): <root>/src/fus2net/cli/...
CONF_DIR = str(Path(__file__).resolve().parents[3] / "conf")
