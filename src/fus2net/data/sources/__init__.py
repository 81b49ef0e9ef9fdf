"""Dataset sources, one per Hydra `dataset` config: each lists labelled images and their masks."""

from fus2net.data.sources.base import DataSource
from fus2net.data.sources.busi import BusiSource, SyntheticSource
from fus2net.data.sources.folders import FolderSource
from fus2net.data.sources.manifest import ManifestSource
from fus2net.data.sources.pooled import PooledSource

__all__ = [
    "BusiSource",
    "DataSource",
    "FolderSource",
    "ManifestSource",
    "PooledSource",
    "SyntheticSource",
]
