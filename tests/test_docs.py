"""The manual (docs/, README.md) against the code: the generated configuration reference lists
every key of the composed default config, and every `fus2net-train` command the docs show
composes with Hydra and passes the config schema, so a doc command with a wrong key or value
fails here. (`mkdocs build --strict` in .ci/run checks the links and anchors.)"""

from __future__ import annotations

import importlib.util
import re
import shlex
import sys
from types import ModuleType

import pytest

from jobs import REPO, compose_train

DOCS = REPO / "docs"
PAGES = [*sorted(DOCS.glob("*.md")), REPO / "README.md"]
SHELL_BLOCK = re.compile(r"^```(?:bash|sh|shell|console)\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`(fus2net-train [^`]+)`")
MAX_SKIPPED = 5  # commands left out (a variable no block sets, a placeholder key): a few at most


def _hook() -> ModuleType:
    path = DOCS / "hooks" / "config_reference.py"
    spec = importlib.util.spec_from_file_location("config_reference", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reference() -> str:
    return _hook().reference_markdown()


def _leaf_keys(node: object, prefix: str = "") -> list[str]:
    if isinstance(node, dict) and node:
        return [k for key, value in node.items() for k in _leaf_keys(value, f"{prefix}{key}.")]
    if isinstance(node, list) and any(isinstance(item, dict) for item in node):
        return [k for i, item in enumerate(node) for k in _leaf_keys(item, f"{prefix}{i}.")]
    return [prefix.rstrip(".")]


def test_the_configuration_reference_lists_every_key_of_the_default_config(
    reference: str,
) -> None:
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(compose_train(), resolve=False)
    keys = _leaf_keys(cfg)
    assert len(keys) > 60, keys  # the composed default, not an empty node
    missing = [key for key in keys if f"| `{key}` |" not in reference]
    assert not missing, f"keys of the default config not in the generated reference: {missing}"


def test_the_reference_lists_every_option_of_every_group(reference: str) -> None:
    conf = REPO / "conf"
    for path in sorted(conf.glob("*/*.yaml")) + sorted(conf.glob("hydra/launcher/*.yaml")):
        group = str(path.parent.relative_to(conf))
        assert f"#### `{group}={path.stem}`" in reference, f"{group}={path.stem}"


def test_the_reference_carries_the_schema_and_the_yaml_comments(reference: str) -> None:
    # A bound of config_groups.py, an Enum's choices, a YAML default and the comment beside it.
    assert "| `cv.folds` | a whole number >= 2 | `5` |" in reference
    assert "| `data.cache` | one of memory, disk, none | `memory` | decoded + resized images" in (
        reference
    )
    assert "Block 2's residual scale" in reference  # conf/model/fus2net.yaml's comment


def test_the_configuration_page_keeps_the_marker_the_hook_replaces() -> None:
    hook = _hook()
    assert hook.MARKER in (DOCS / hook.PAGE).read_text()


# ------------------------------------------------------------------ commands of the docs


def _logical_lines(block: str) -> list[str]:
    """A shell block's commands: `\\`-continued lines joined, comment lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    return [line.strip() for line in joined.splitlines() if line.strip()]


def _strip_comment(line: str) -> str:
    """`cmd ...   # comment` -> `cmd ...` (a `#` inside quotes kept)."""
    quote = ""
    for i, char in enumerate(line):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line


def _first_of_sweep(override: str) -> str:
    """`key=a,b,c` -> `key=a` (a comma inside brackets, braces or quotes is not a sweep)."""
    key, sep, value = override.partition("=")
    depth, quote = 0, ""
    for i, char in enumerate(value):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char == "," and depth == 0:
            return f"{key}{sep}{value[:i]}"
    return override


def _commands(text: str, where: str) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """(where, overrides) of every `fus2net-train` command of the shell blocks and inline code
    of a page, its variables expanded from the same block; and the commands skipped."""
    found, skipped = [], []
    blocks = SHELL_BLOCK.findall(text)
    page_variables: dict[str, str] = {}  # what the page's blocks set, for its inline commands
    sources = [(block, True) for block in blocks]
    sources += [(span.replace("\n", " "), False) for span in INLINE.findall(text)]
    for source, is_block in sources:
        variables: dict[str, str] = {} if is_block else dict(page_variables)
        for line in _logical_lines(source) if is_block else [source]:
            line = _strip_comment(line)
            assignment = re.fullmatch(r"(?:export\s+)?([A-Za-z_]\w*)=(.*)", line)
            if assignment and "fus2net-train" not in line:
                words = shlex.split(assignment[2])
                variables[assignment[1]] = page_variables[assignment[1]] = words[0] if words else ""
                continue
            if "fus2net-train" not in line:
                continue
            command = re.split(r"&&|;|\|", line.split("fus2net-train", 1)[1])[0]
            for name, value in variables.items():
                command = re.sub(rf"\$(?:{name}\b|\{{{name}\}})", lambda _m, v=value: v, command)
            shown = f"{where}: fus2net-train{command}"
            if "$" in command or "..." in command or re.search(r"<[^>]*>=", command):
                skipped.append(shown)  # a variable no block sets, or a placeholder key
                continue
            words = shlex.split(command)
            sweep = any(word in ("-m", "--multirun") for word in words)
            overrides = [w for w in words if w not in ("-m", "--multirun")]
            if sweep:
                overrides = [_first_of_sweep(w) for w in overrides]
            found.append((shown, overrides))
    return found, skipped


def _all_commands() -> tuple[list[tuple[str, list[str]]], list[str]]:
    found, skipped = [], []
    for page in PAGES:
        more, left = _commands(page.read_text(), str(page.relative_to(REPO)))
        found += more
        skipped += left
    return found, skipped


def test_the_command_extraction_expands_variables_and_sweeps() -> None:
    text = (
        "```bash\n"
        'P="dataset=busi cv.folds=5 \\\n   trainer.max_epochs=30"\n'
        "fus2net-train -m optimizer=adam,sgd $P   # comment\n"
        "fus2net-train $UNSET\n"
        "```\n"
        "Inline: `fus2net-train -m model=fus2net,googlenet dataset.filters={a:[x,y]}`.\n"
    )
    found, skipped = _commands(text, "page")
    assert [overrides for _, overrides in found] == [
        ["optimizer=adam", "dataset=busi", "cv.folds=5", "trainer.max_epochs=30"],
        ["model=fus2net", "dataset.filters={a:[x,y]}"],
    ]
    assert skipped == ["page: fus2net-train $UNSET"]


def test_every_training_command_of_the_docs_composes_and_passes_the_schema(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fus2net.config.validate import config_problems

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    found, skipped = _all_commands()
    assert len(found) >= 20, found  # the docs' commands were found at all
    assert len(skipped) <= MAX_SKIPPED, f"too many doc commands left unchecked: {skipped}"
    failures = []
    for shown, overrides in found:
        try:
            problems = config_problems(compose_train(*overrides))
        except Exception as err:  # Hydra refuses the overrides: a wrong key or option
            problems = [f"{type(err).__name__}: {err}"]
        if problems:
            failures.append(f"{shown}\n    " + "\n    ".join(problems))
    assert not failures, "doc commands that do not compose:\n" + "\n".join(failures)


# ------------------------------------------------------------------ README's links into docs/


def _slug(heading: str) -> str:
    """Python-Markdown's toc slug (what mkdocs gives a heading as its anchor)."""
    import unicodedata

    text = re.sub(r"`|\*", "", heading)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def test_the_readme_links_to_pages_and_headings_that_exist(reference: str) -> None:
    """README.md is read on GitHub, outside the mkdocs build that checks the docs' own links."""
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", (REPO / "README.md").read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto
        path, _, anchor = target.partition("#")
        page = REPO / path
        if not page.exists():
            broken.append(target)
            continue
        if anchor:
            text = page.read_text() + (reference if page.name == "configuration.md" else "")
            headings = re.findall(r"^#+ (.+)$", text, re.M)
            if anchor not in {_slug(h) for h in headings}:
                broken.append(target)
    assert not broken, f"README links to nothing: {broken}"
