"""The typed config schema: every bad key named before any data is read, every shipped option
valid, unknown keys refused (with a near name), open namespaces taking what is passed on."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import get_args

import pytest

from fus2net.cli import config_dir
from fus2net.config import groups as config_groups
from fus2net.config.factories import resolved_container
from fus2net.config.messages import choices
from fus2net.config.preflight import ConfigError
from fus2net.config.validate import config_problems, validate_config
from fus2net.tracking.provenance import cell_key
from jobs import compose_train, run_train, tiny

CONF = Path(config_dir())
# What an option with a `???` value needs before it validates (the user gives it).
REQUIRED = {
    "dataset=folder": ("dataset.root=/data/tree",),
    "dataset=manifest": ("dataset.csv=/data/list.csv", "dataset.image_column=path"),
}


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        pytest.param(
            ("cv.folds=abc", "seed=-1", "optimizer.lr=-1", "+new.key=1", "+data.imgsize=64"),
            (
                "cv.folds=abc: must be a whole number >= 2",
                "seed=-1: must be a whole number >= 0",
                "optimizer.lr=-1: must be a number > 0",
                "new.key=1: unknown key new",
                "data.imgsize=64: unknown key data.imgsize; did you mean data.image_size?",
            ),
            id="all-at-once",
        ),
        pytest.param(
            ("cv.folds=2.5",), ("cv.folds=2.5: must be a whole number >= 2",), id="not-truncated"
        ),
    ],
)
def test_issue_examples_stop_the_job_before_any_data(
    overrides: tuple[str, ...], named: tuple[str, ...], tmp_path: Path
) -> None:
    proc = run_train(tiny(*overrides), cwd=tmp_path, check=False, timeout=300)
    out = proc.stdout + proc.stderr  # the error is logged by Hydra's console handler (stdout)
    assert proc.returncode == 2, out
    for text in named:
        assert text in out
    assert "Traceback" not in out
    for written in ("mlruns", "data", ".cache"):  # no store, no generated data, no cache
        assert not (tmp_path / written).exists(), written


def _group_options() -> list[tuple[str, ...]]:
    """Every option of every group in conf/ (and every experiment preset), as overrides."""
    found = []
    for folder in sorted(p for p in CONF.iterdir() if p.is_dir() and p.name != "hydra"):
        for option in sorted(folder.glob("*.yaml")):
            choice = f"{folder.name}={option.stem}"
            found.append((choice, *REQUIRED.get(choice, ())))
    return found


@pytest.mark.parametrize("overrides", _group_options(), ids=lambda o: o[0])
def test_every_shipped_option_composes_and_validates(overrides: tuple[str, ...]) -> None:
    """Also the check that every key of every YAML file is in the schema: an unknown one
    would be refused here."""
    assert config_problems(compose_train(*overrides, hydra_config=True)) == []


@pytest.mark.parametrize("option", sorted(p.stem for p in (CONF / "dataset").glob("*.yaml")))
def test_every_dataset_option_validates_as_an_external_dataset(option: str) -> None:
    required = [
        o.replace("dataset.", "eval_datasets.ext.") for o in REQUIRED.get(f"dataset={option}", ())
    ]
    cfg = compose_train(f"+dataset@eval_datasets.ext={option}", *required)
    assert config_problems(cfg) == []


def test_every_problem_is_listed_at_once_with_the_closest_key() -> None:
    cfg = compose_train(
        "dataset=folder",  # dataset.root is ???
        "data.cache=memroy",
        "data.test.per_class=[50,0]",
        "evaluation.target_sensitivity=1.5",
        "+data.max_epochs=3",
        "+optimizer.weight_decy=0.1",
        "+trainer.logger=false",
        "model.pool=max",
    )
    with pytest.raises(ConfigError) as error:
        validate_config(cfg)
    text = str(error.value)
    for expected in (
        "dataset.root=???: needs a value: a non-empty string",
        "data.cache=memroy: must be one of memory, disk, none; did you mean memory?",
        "data.test.per_class=[50,0]: must be a non-empty list of whole numbers with every "
        "value >= 1, or null",
        "evaluation.target_sensitivity=1.5: must be a number > 0 and <= 1",
        "data.max_epochs=3: unknown key data.max_epochs; did you mean trainer.max_epochs?",
        "optimizer.weight_decy=0.1: unknown key optimizer.weight_decy; did you mean "
        "optimizer.weight_decay?",
        "trainer.logger: set by fus2net itself",
        "model.pool=max: must be one of auto, avg8, adaptive",
    ):
        assert expected in text
    assert text.count("\n  - ") == 8


def test_open_namespaces_take_their_targets_arguments_and_nothing_else() -> None:
    accepted = compose_train(
        "+optimizer.amsgrad=true",  # torch.optim.Adam's own argument
        "+trainer.accumulate_grad_batches=2",  # a pytorch_lightning.Trainer argument
        "+dataset@eval_datasets.ext=synthetic",  # any name
        "eval_datasets.ext.n_images=12",
        "data.max_image_pixels=1e8",  # a whole number, as the decoder reads it
    )
    assert config_problems(accepted) == []
    refused = {
        "+optimizer.amsgrad=maybe": "optimizer.amsgrad=maybe: must be true or false",
        "+scheduler.step_size=3": "unknown key scheduler.step_size",  # scheduler=none
        "optimizer.betas=[0.9,1.5]": "torch.optim.Adam refuses these settings: Invalid beta",
        "augmentation.transforms.0.p=2": "augmentation.transforms.0.p=2: must be a number >= 0",
        "+augmentation.transforms.0.rotat=5": "did you mean augmentation.transforms.0.rotate?",
        "+model.pool=avg8": "unknown key model.pool",  # model=resnet18 below has no pool
        "+eval_datasets.ext.rot=/x": "did you mean eval_datasets.ext.root?",
        "optimizer._target_=torch.optim.Adamm": "torch.optim has no Adamm",
    }
    for override, message in refused.items():
        extra = ["model=resnet18"] if "model" in override else []
        if "eval_datasets" in override:
            extra = ["+dataset@eval_datasets.ext=synthetic"]
        problems = config_problems(compose_train(*extra, override))
        assert len(problems) == 1 and message in problems[0], (override, problems)


def test_the_cell_key_depends_only_on_keys_something_reads() -> None:
    base = compose_train()
    assert config_problems(compose_train("+new.key=1")) != []  # refused: never a new cell
    progress = compose_train("+dataset.progress=false")  # read, but changes no result
    assert config_problems(progress) == []
    assert cell_key(resolved_container(progress)) == cell_key(resolved_container(base))
    amsgrad = compose_train("+optimizer.amsgrad=true")
    assert cell_key(resolved_container(amsgrad)) != cell_key(resolved_container(base))


def test_models_follow_the_signatures_they_type() -> None:
    """The signature stays the truth of which arguments exist; the model only types them."""
    from fus2net.evaluation.calibration import CALIBRATION_METHODS
    from fus2net.models.fus2net import Fus2Net, PoolMode

    for source, schema in config_groups.dataset_schemas().items():
        fields = {f.alias or name for name, f in schema.model_fields.items()} - {"_target_"}
        assert fields == set(inspect.signature(source).parameters), source
    model_args = set(inspect.signature(Fus2Net).parameters)
    model_args -= set(config_groups.MODEL_ARGUMENTS_SET_BY_FUS2NET)
    model_fields = set(config_groups.Fus2NetModel.model_fields)
    assert model_fields == model_args | {"name", "pretrained_path", "lesion_crop"}  # create_model's
    # the choices the schema takes (and words) are those the owning module accepts
    evaluation, model = (
        config_groups.Evaluation.model_fields,
        config_groups.Fus2NetModel.model_fields,
    )
    assert choices(evaluation["calibration"]) == list(CALIBRATION_METHODS)
    assert choices(model["pool"]) == list(get_args(PoolMode))


def test_the_validated_config_is_typed_once_with_its_defaults() -> None:
    import pydantic

    from fus2net.images.imageio import ImageLimits

    typed = validate_config(compose_train("~data.max_image_pixels", "optimizer.lr=0.01"))
    assert typed.cv.folds == 5 and typed.model.name == "fus2net" and typed.optimizer.lr == 0.01
    assert typed.data.limits == ImageLimits()  # the schema's default where the YAML has none
    assert typed.augmentation.transforms[0].p == pytest.approx(0.8)  # a nested target, typed
    with pytest.raises(pydantic.ValidationError):
        typed.cv.folds = 3  # frozen: read, never changed


def test_what_no_single_key_tells_is_left_to_check_config(tmp_path: Path) -> None:
    from fus2net.config.preflight import check_config

    cfg = compose_train(
        "data.test.per_class=[50,50]",  # and data.test.fraction=0.2: both set
        "cv.fold=5",  # of cv.folds=5
        f"model.pretrained_path={tmp_path / 'gone.pt'}",  # a file, never loaded here
    )
    assert config_problems(cfg) == []  # each key alone is fine
    with pytest.raises(ConfigError) as error:
        check_config(cfg)
    text = str(error.value)
    assert "set exactly one of data.test.fraction" in text and "cv.fold=5: must be in 0..4" in text
    assert f"model.pretrained_path={tmp_path / 'gone.pt'}: no such file" in text
