"""Class-per-folder datasets (`<root>/<class>/**/<image>`), with masks found beside their image."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fus2net.data.records import FIX_REPEATED, Record, repeated_file_problems
from fus2net.data.sources.base import (
    DataSource,
    ProblemLog,
    check_root,
    is_image_file,
    natural_key,
    resolve_path,
    sort_records,
)
from fus2net.images.imageio import IMAGE_SUFFIXES

_FIX_CLASSES = "Set dataset.classes to the class folders that exist, or add the missing ones."
_FIX_EMPTY = "Put the class's images (" + ", ".join(IMAGE_SUFFIXES) + ") in its folder."
_FIX_STRAY_MASK = "Add the image the mask belongs to, or delete the stray mask."
_FIX_AMBIGUOUS = "Give each image a unique name (its masks are matched by name)."
_FIX_GROUP = "Fix dataset.group_regex so it matches every path (relative to its class folder)."
_FIX_OUTSIDE = (
    "Replace the symlink by a copy of the file, point dataset.root at a folder that holds "
    "every image and mask, or add +dataset.allow_outside_root=true to accept files outside it."
)


class FolderSource(DataSource):
    """Any class-per-folder tree; the folder name is the class, sub-folders may nest.

    A file `<name><mask_suffix>[_<n>].<ext>` next to `<name>.<ext>` is a lesion mask of that
    image rather than an image (BUSI's convention; the suffix in any case, `_MASK` too);
    `mask_suffix=None` turns this off.
    `group_regex` extracts a patient id from the path relative to the class folder (named group
    `group`, else the first group, else the whole match), e.g. `^([^/]+)/` for patient folders.
    A symlink that resolves outside `root` is refused (as a manifest's `../` path is) unless
    `allow_outside_root`; a file reached twice (a symlink to another image) is refused too.
    """

    root_fix = "Set dataset.root=PATH to a folder holding one sub-folder of images per class."

    def __init__(
        self,
        root: str | Path,
        classes: Sequence[str] | None = None,
        recursive: bool = True,
        mask_suffix: str | None = "_mask",
        group_regex: str | None = None,
        name: str = "folder",
        allow_outside_root: bool = False,
    ) -> None:
        self.name = name
        self.allow_outside_root = bool(allow_outside_root)
        self.root = resolve_path(root)
        self._classes = [str(c) for c in classes] if classes is not None else None
        self.recursive = recursive
        self.mask_suffix = mask_suffix
        self.group_regex = re.compile(group_regex) if group_regex else None
        # `b1_MASK.PNG` is a mask of `b1.png` as much as `b1_mask.png` is: the suffix (like the
        # file suffix) is matched without regard to case, the stem exactly.
        self._mask_pattern = (
            re.compile(rf"(?P<stem>.+?)(?i:{re.escape(mask_suffix)})(?:_(?P<index>\d+))?")
            if mask_suffix
            else None
        )

    @property
    def class_names(self) -> list[str]:
        """The configured classes, or every visible sub-folder of the root in natural order."""
        if self._classes is not None:
            return list(self._classes)
        return self._subfolders()

    def _subfolders(self) -> list[str]:
        if not self.root.is_dir():
            return []
        names = [p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")]
        return sorted(names, key=natural_key)

    def options(self) -> dict[str, Any]:
        return {
            "classes_from": "config" if self._classes is not None else "sub-folders",
            "recursive": self.recursive,
            "mask_suffix": self.mask_suffix,
            "group_regex": self.group_regex.pattern if self.group_regex else None,
            "allow_outside_root": self.allow_outside_root,
        }

    def load(self) -> list[Record]:
        log = ProblemLog(self.name)
        if not check_root(self.root, log, self.root_fix):
            log.raise_if_any()
        class_names = self.class_names
        if not class_names:
            log.add(self.root, "no class sub-folders found", self.root_fix)
        records: list[Record] = []
        for label, class_name in enumerate(class_names):
            class_dir = self.root / class_name
            if not class_dir.is_dir():
                found = ", ".join(self._subfolders()) or "none"
                reason = f"class folder '{class_name}' is missing (sub-folders found: {found})"
                log.add(class_dir, reason, _FIX_CLASSES)
                continue
            class_records = self._scan_class(class_dir, label, log)
            records.extend(class_records)
        for problem in repeated_file_problems(records):
            log.add(problem.path, problem.reason, FIX_REPEATED)
        log.raise_if_any()
        return sort_records(records)

    def _class_files(self, class_dir: Path) -> list[Path]:
        files = class_dir.rglob("*") if self.recursive else class_dir.iterdir()
        return sorted(
            f
            for f in files
            if f.is_file()
            and not any(part.startswith(".") for part in f.relative_to(class_dir).parts)
        )

    def _scan_class(self, class_dir: Path, label: int, log: ProblemLog) -> list[Record]:
        """Pair the images of one class folder with their masks; log empty folders, stray masks."""
        images: dict[tuple[Path, str], list[Path]] = defaultdict(list)
        masks: dict[tuple[Path, str], list[tuple[int, Path]]] = defaultdict(list)
        other_suffixes: Counter[str] = Counter()
        refused = 0
        for path in self._class_files(class_dir):
            if not is_image_file(path):
                other_suffixes[path.suffix.lower() or "(no suffix)"] += 1
                continue
            if not self._inside_root(path, log):
                refused += 1
                continue
            match = self._mask_pattern.fullmatch(path.stem) if self._mask_pattern else None
            if match:
                index = int(match["index"]) if match["index"] is not None else 0
                masks[(path.parent, match["stem"])].append((index, path))
            else:
                images[(path.parent, path.stem)].append(path)

        if not images and not refused:  # refused files are named already
            reason = "class folder has no images"
            if other_suffixes:
                listed = ", ".join(f"{n} {s}" for s, n in other_suffixes.most_common())
                reason += f" (only other files: {listed})"
            log.add(class_dir, reason, _FIX_EMPTY)
        for key, mask_list in masks.items():
            if key not in images:
                for _, mask in sorted(mask_list):
                    reason = f"mask without its image (no '{key[1]}.<ext>' in the same folder)"
                    log.add(mask, reason, _FIX_STRAY_MASK)

        records = []
        for key, paths in images.items():
            mask_paths = tuple(p for _, p in sorted(masks.get(key, [])))
            if len(paths) > 1 and mask_paths:
                for path in paths:
                    reason = "several images share this name, so its masks are ambiguous"
                    log.add(path, reason, _FIX_AMBIGUOUS)
                continue
            for path in paths:
                group = self._group_of(path, class_dir, log)
                records.append(Record(image=path, label=label, masks=mask_paths, group=group))
        return records

    def _inside_root(self, path: Path, log: ProblemLog) -> bool:
        """Whether the file, its symlinks resolved, lies under the (resolved) root; logs it when
        not. A symlink must not reach files elsewhere unless the config allows it."""
        real = path.resolve()
        if self.allow_outside_root or real.is_relative_to(self.root):
            return True
        log.add(path, f"a symlink that resolves outside dataset.root (to {real})", _FIX_OUTSIDE)
        return False

    def _group_of(self, path: Path, class_dir: Path, log: ProblemLog) -> str | None:
        if self.group_regex is None:
            return None
        relative = path.relative_to(class_dir).as_posix()
        match = self.group_regex.search(relative)
        if match is None:
            log.add(path, f"group_regex {self.group_regex.pattern!r} does not match", _FIX_GROUP)
            return None
        if "group" in self.group_regex.groupindex:
            return match["group"]
        return match[1] if self.group_regex.groups else match[0]
