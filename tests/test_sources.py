"""Dataset sources (BUSI, class folders, CSV manifests, synthetic) and their error reports."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from PIL import Image

from fus2net.data.records import DataError, Record
from fus2net.data.sources import BusiSource, FolderSource, ManifestSource, SyntheticSource
from fus2net.data.validation import inspect_records, validate_records
from fus2net.images.imageio import load_image

REPO = Path(__file__).resolve().parents[1]
BUSI_ROOT = REPO.parent / "shared/data/busi/Dataset_BUSI_with_GT"
needs_busi = pytest.mark.skipif(not BUSI_ROOT.is_dir(), reason="BUSI not beside the checkout")


def save(path: Path, mode: str = "L", size: tuple[int, int] = (8, 6), value=100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)
    return path


# --------------------------------------------------------------------------- BUSI


@needs_busi
@pytest.mark.busi
def test_busi_finds_every_image_and_mask() -> None:
    records = BusiSource(BUSI_ROOT).load()
    assert Counter(r.label for r in records) == {0: 437, 1: 210}
    assert all(r.masks and r.group is None for r in records)
    on_disk = {
        p.resolve() for c in ("benign", "malignant") for p in (BUSI_ROOT / c).glob("*_mask*.png")
    }
    assert {m.resolve() for r in records for m in r.masks} == on_disk
    by_name = {r.image.name: r for r in records}
    assert [m.name for m in by_name["benign (100).png"].masks] == [
        "benign (100)_mask.png",
        "benign (100)_mask_1.png",
    ]
    assert records == sorted(records, key=lambda r: r.label)  # benign block, then malignant
    assert all(r.image.is_absolute() for r in records)


@needs_busi
@pytest.mark.busi
def test_busi_normal_only_when_asked() -> None:
    default = BusiSource(BUSI_ROOT).load()
    assert not any(r.image.parent.name == "normal" for r in default)
    source = BusiSource(BUSI_ROOT, classes=["normal", "benign", "malignant"])
    assert Counter(r.label for r in source.load()) == {0: 133, 1: 437, 2: 210}
    assert source.describe()["classes"] == ["normal", "benign", "malignant"]


@needs_busi
@pytest.mark.busi
def test_busi_decodes_without_problems() -> None:
    records = BusiSource(BUSI_ROOT).load()
    infos = inspect_records(records, channels=1)
    assert [p for i in infos for p in i.problems] == []
    assert {i.mode for i in infos} == {"RGB"} and min(i.size[1] for i in infos) == 320


def test_busi_config_reads_env_root(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FUS2NET_BUSI_ROOT", str(tmp_path))
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["dataset=busi"])
    source = instantiate(cfg.dataset)
    assert isinstance(source, BusiSource) and source.root == tmp_path
    assert source.class_names == ["benign", "malignant"]


# --------------------------------------------------------------------------- class folders


def _mixed_tree(root: Path) -> None:
    """Two classes, nested folders, five formats and modes L, RGB, RGBA, P, I;16."""
    save(root / "benign/p1/a.png", "L", value=100)
    save(root / "benign/p1/a_mask.png", "L", value=255)
    save(root / "benign/p2/deep/b.jpg", "RGB", value=(10, 20, 30))
    save(root / "benign/c.png", "RGBA", value=(10, 20, 30, 255))
    (root / "malignant/p3").mkdir(parents=True)
    palette = Image.new("P", (8, 6), 1)
    palette.putpalette([0, 0, 0, 200, 50, 25] + [0] * 762)
    palette.save(root / "malignant/p3/d.bmp")
    ramp = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (4, 1))
    Image.fromarray(ramp).save(root / "malignant/p3/e.tif")
    (root / "malignant/notes.txt").write_text("ignored: not an image suffix")
    save(root / "normal/f.png")  # not a listed class


def test_folder_finds_nested_images_of_every_format(tmp_path: Path) -> None:
    _mixed_tree(tmp_path)
    records = FolderSource(tmp_path, classes=["benign", "malignant"]).load()
    assert [(r.image.relative_to(tmp_path).as_posix(), r.label) for r in records] == [
        ("benign/c.png", 0),
        ("benign/p1/a.png", 0),
        ("benign/p2/deep/b.jpg", 0),
        ("malignant/p3/d.bmp", 1),
        ("malignant/p3/e.tif", 1),
    ]
    assert records[1].masks == (tmp_path / "benign/p1/a_mask.png",)
    assert [len(r.masks) for r in records] == [0, 1, 0, 0, 0]


def test_folder_groups_from_path_and_unmatched_paths_named(tmp_path: Path) -> None:
    _mixed_tree(tmp_path)
    records = FolderSource(tmp_path, classes=["malignant"], group_regex="^(p\\d)/").load()
    assert [r.group for r in records] == ["p3", "p3"]
    with pytest.raises(DataError) as info:
        FolderSource(tmp_path, classes=["benign"], group_regex="^(?P<group>p\\d)/").load()
    assert [p.path for p in info.value.problems] == [str(tmp_path / "benign/c.png")]


def test_folder_classes_default_to_sorted_subfolders(tmp_path: Path) -> None:
    _mixed_tree(tmp_path)
    source = FolderSource(tmp_path)
    assert source.class_names == ["benign", "malignant", "normal"]
    assert Counter(r.label for r in source.load()) == {0: 3, 1: 2, 2: 1}
    flat = FolderSource(tmp_path, classes=["benign"], recursive=False).load()
    assert [r.image.name for r in flat] == ["c.png"]


@pytest.mark.parametrize("channels", [1, 3])
def test_every_mode_converts_to_channels(tmp_path: Path, channels: int) -> None:
    _mixed_tree(tmp_path)
    records = {r.image.name: r for r in FolderSource(tmp_path).load()}
    arrays = {name: load_image(r.image, channels) for name, r in records.items()}
    assert all(a.shape[2] == channels and a.dtype == np.uint8 for a in arrays.values())

    def gray(rgb: tuple[int, int, int]) -> int:
        return Image.new("RGB", (1, 1), rgb).convert("L").getpixel((0, 0))

    expected = {
        "a.png": (100, 100, 100),
        "b.jpg": (10, 20, 30),
        "c.png": (10, 20, 30),  # RGBA, opaque
        "d.bmp": (200, 50, 25),  # palette index 1
    }
    for name, rgb in expected.items():
        want = np.array([gray(rgb)] if channels == 1 else rgb)
        tolerance = 3 if name.endswith(".jpg") else 0  # JPEG is lossy
        assert np.abs(arrays[name].astype(int) - want).max() <= tolerance, name
    ramp = arrays["e.tif"]
    assert ramp.shape == (4, 256, channels)
    assert ramp[0, 0, 0] == 0 and ramp[0, -1, 0] == 255
    assert (np.diff(ramp[0, :, 0].astype(int)) >= 0).all() and len(np.unique(ramp)) > 200


# --------------------------------------------------------------------------- structural errors


def test_missing_root_is_named_with_fix(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        BusiSource(tmp_path / "nowhere").load()
    message = str(info.value)
    assert str(tmp_path / "nowhere") in message and "does not exist" in message
    assert "FUS2NET_BUSI_ROOT" in message  # the fix


def test_structural_problems_are_reported_together(tmp_path: Path) -> None:
    save(tmp_path / "benign/ok.png")
    save(tmp_path / "benign/ghost_mask.png")  # mask without image
    save(tmp_path / "benign/ghost_mask_1.png")
    (tmp_path / "malignant").mkdir()
    (tmp_path / "malignant/scan.dcm").write_bytes(b"DICM")  # empty class (no image suffix)
    with pytest.raises(DataError) as info:
        FolderSource(tmp_path, classes=["benign", "malignant", "atypical"]).load()
    problems = {p.path: p.reason for p in info.value.problems}
    assert problems.keys() == {
        str(tmp_path / "benign/ghost_mask.png"),
        str(tmp_path / "benign/ghost_mask_1.png"),
        str(tmp_path / "malignant"),
        str(tmp_path / "atypical"),
    }
    assert "mask without its image" in problems[str(tmp_path / "benign/ghost_mask.png")]
    assert (
        "no images" in problems[str(tmp_path / "malignant")]
        and ".dcm" in problems[str(tmp_path / "malignant")]
    )
    assert "missing" in problems[str(tmp_path / "atypical")]
    assert "Fix:" in str(info.value)


def test_validation_names_every_bad_file(tmp_path: Path) -> None:
    good = save(tmp_path / "benign/good.png", size=(40, 32))
    save(tmp_path / "benign/good_mask.png", size=(40, 32))
    (tmp_path / "benign/zero.png").write_bytes(b"")
    (tmp_path / "benign/text.png").write_text("this is not an image")
    png = save(tmp_path / "x.png", "RGB", size=(64, 64), value=(1, 2, 3)).read_bytes()
    (tmp_path / "malignant").mkdir()
    (tmp_path / "malignant/truncated.png").write_bytes(png[: len(png) // 2])
    save(tmp_path / "malignant/sized.png", size=(40, 32))
    save(tmp_path / "malignant/sized_mask.png", size=(41, 32))
    records = FolderSource(tmp_path, classes=["benign", "malignant"]).load()
    assert len(records) == 5  # structure is fine: nothing is decoded by load()
    problems = {Path(p.path).name: p.reason for p in validate_records(records, channels=3)}
    assert problems.keys() == {"zero.png", "text.png", "truncated.png", "sized_mask.png"}
    assert "zero-byte" in problems["zero.png"]
    assert "not an image" in problems["text.png"]
    assert "corrupt" in problems["truncated.png"]
    assert "41x32" in problems["sized_mask.png"] and "40x32" in problems["sized_mask.png"]
    assert validate_records([Record(good, 0)], channels=1) == []


# --------------------------------------------------------------------------- manifests


def _busbra_like(root: Path, rows: list[tuple[str, str, str]]) -> None:
    """BUS-BRA's layout: bus_data.csv (ID, Case, Pathology), Images/<ID>.png, Masks/mask_<n>.png."""
    lines = ["ID,Case,Histology,Pathology,BIRADS"]
    for image_id, case, pathology in rows:
        lines.append(f"{image_id},{case},x,{pathology},3")
        save(root / "Images" / f"{image_id}.png")
        save(root / "Masks" / f"mask_{image_id.removeprefix('bus_')}.png")
    (root / "bus_data.csv").write_text("\n".join(lines) + "\n")


def test_public_csv_dataset_loads_by_configuration_alone(tmp_path: Path) -> None:
    rows = [
        ("bus_0001-l", "1", "benign"),
        ("bus_0001-r", "1", "benign"),
        ("bus_0002-l", "2", "malignant"),
    ]
    _busbra_like(tmp_path, rows)
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["dataset=busbra", f"dataset.root={tmp_path}"])
    source = instantiate(cfg.dataset)
    records = source.load()
    assert [(r.image.name, r.label, r.group) for r in records] == [
        ("bus_0001-l.png", 0, "1"),
        ("bus_0001-r.png", 0, "1"),
        ("bus_0002-l.png", 1, "2"),
    ]
    assert records[2].masks == (tmp_path / "Masks/mask_0002-l.png",)
    assert source.describe()["name"] == "busbra"


def test_manifest_image_column_label_map_and_mask_column(tmp_path: Path) -> None:
    save(tmp_path / "img/a.png")
    save(tmp_path / "img/b.png")
    save(tmp_path / "img/n.png")
    save(tmp_path / "seg/a1.png")
    save(tmp_path / "seg/a2.png")
    csv = tmp_path / "meta/list.tsv"
    csv.parent.mkdir()
    csv.write_text(
        "path\tdx\tpatient\tmask\n"
        "img/a.png\tM\tP7\tseg/a1.png\n"
        "img/a.png\tM\tP7\tseg/a2.png\n"  # a second lesion of the same image: masks merge
        "img/b.png\tB\tP8\t\n"
        "img/n.png\tN\tP9\t\n"
    )
    source = ManifestSource(
        csv,
        classes=["benign", "malignant"],
        label_column="dx",
        image_column="path",
        label_map={"B": "benign", "M": 1, "N": None},
        group_column="patient",
        mask_column="mask",
        root=tmp_path,
        delimiter="\t",
    )
    records = source.load()
    assert [(r.image.name, r.label, r.group, len(r.masks)) for r in records] == [
        ("b.png", 0, "P8", 0),
        ("a.png", 1, "P7", 2),
    ]


def test_manifest_reports_every_bad_row(tmp_path: Path) -> None:
    _busbra_like(tmp_path, [("bus_1", "1", "benign"), ("bus_2", "2", "malignant")])
    (tmp_path / "Masks/mask_2.png").unlink()
    with (tmp_path / "bus_data.csv").open("a") as f:
        f.write("bus_3,3,x,BENIGN_WITHOUT_CALLBACK,3\nbus_4,4,x,atypical,4\nbus_5,5,x,benign,3\n")
    source = ManifestSource(
        tmp_path / "bus_data.csv",
        classes=["benign", "malignant"],
        label_column="Pathology",
        id_column="ID",
        path_template="{root}/Images/{id}.png",
        mask_template="{root}/Masks/mask_{n}.png",
        id_regex="bus_(?P<n>\\d+)",
        group_column="Case",
    )
    with pytest.raises(DataError) as info:
        source.load()
    message = str(info.value)
    assert "row 4: unknown label 'BENIGN_WITHOUT_CALLBACK'" in message
    assert "row 5: unknown label 'atypical'" in message
    assert str(tmp_path / "Masks/mask_2.png") in message  # missing mask
    assert str(tmp_path / "Images/bus_5.png") in message  # missing image
    assert len(info.value.problems) == 5  # bus_5 lacks both its image and its mask
    assert "label_map" in message  # the fix


def test_manifest_config_errors(tmp_path: Path) -> None:
    csv = tmp_path / "list.csv"
    csv.write_text("file,label\na.png,benign\n")
    with pytest.raises(ValueError, match="label_map"):
        ManifestSource(csv, ["benign"], "label", image_column="file", label_map={"x": "cyst"})
    with pytest.raises(ValueError, match="exactly one"):
        ManifestSource(csv, ["benign"], "label")
    with pytest.raises(DataError, match="'diagnosis' is not a column"):
        ManifestSource(csv, ["benign"], "diagnosis", image_column="file").load()
    with pytest.raises(DataError, match="manifest CSV does not exist"):
        ManifestSource(tmp_path / "no.csv", ["benign"], "label", image_column="file").load()


# --------------------------------------------------------------------------- synthetic


def test_synthetic_generates_then_reads_as_busi(tmp_path: Path) -> None:
    source = SyntheticSource(tmp_path / "syn", n_images=9, image_size=64, seed=3, progress=False)
    records = source.load()
    assert len(records) == 9 and {r.label for r in records} == {0, 1}
    assert all(len(r.masks) >= 1 for r in records)
    assert validate_records(records, channels=1) == []
    assert source.describe()["options"]["n_images"] == 9
    again = SyntheticSource(tmp_path / "syn", n_images=9, image_size=64, seed=3, progress=False)
    assert again.load() == records  # the written dataset is reused, in the same order


def test_synthetic_passes_its_parameters(tmp_path: Path, monkeypatch) -> None:
    import fus2net.synthetic.generator as synthetic

    calls = []

    def fake_generate(root, **kwargs):
        calls.append(kwargs)
        save(Path(root) / "benign/benign (1).png")
        save(Path(root) / "malignant/malignant (1).png")
        return Path(root)

    monkeypatch.setattr(synthetic, "generate_dataset", fake_generate)
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"paths.data_dir={tmp_path}"])
    records = instantiate(cfg.dataset).load()
    assert calls == [
        dict(n_images=500, image_size=299, malignant_fraction=0.333, seed=0, progress=True)
    ]
    assert [r.image for r in records] == [
        tmp_path / "synthetic/benign/benign (1).png",
        tmp_path / "synthetic/malignant/malignant (1).png",
    ]


# --------------------------------------------------------------------------- manifest edge cases


def _two_image_root(root: Path) -> None:
    save(root / "img/a.png", size=(40, 32))
    save(root / "img/b.png", size=(40, 32))


def _manifest(csv: Path, **options) -> ManifestSource:
    return ManifestSource(csv, ["benign", "malignant"], "label", image_column="path", **options)


def test_manifest_class_without_rows_is_named(tmp_path: Path) -> None:
    _two_image_root(tmp_path)
    csv = tmp_path / "list.csv"
    csv.write_text("path,label\nimg/a.png,B\nimg/b.png,N\n")
    with pytest.raises(DataError) as info:
        _manifest(csv, label_map={"B": "benign", "M": "malignant", "N": None}).load()
    assert [p.path for p in info.value.problems] == ["class 'malignant' (label 1)"]
    message = str(info.value)
    assert "no row's 'label' value maps to it through dataset.label_map" in message
    assert "dataset.classes" in message and "label_map" in message.split("Fix:")[1]


def test_manifest_header_without_rows_or_empty_file(tmp_path: Path) -> None:
    csv = tmp_path / "list.csv"
    csv.write_text("path,label\n")
    with pytest.raises(DataError, match="the CSV has a header but no rows") as info:
        _manifest(csv).load()
    assert len(info.value.problems) == 1  # not also one per empty class
    csv.write_text("")
    with pytest.raises(DataError, match=r"the CSV is empty \(no header, no rows\)"):
        _manifest(csv).load()


@pytest.mark.parametrize(
    ("separator", "quoted"),
    [(";", "\"dataset.delimiter=';'\""), ("\t", "\"dataset.delimiter='\\t'\"")],
)
def test_manifest_other_delimiter_names_the_key_and_quoting(
    tmp_path: Path, separator: str, quoted: str
) -> None:
    _two_image_root(tmp_path)
    csv = tmp_path / "list.csv"
    csv.write_text(
        f"path{separator}label\nimg/a.png{separator}benign\nimg/b.png{separator}malignant\n"
    )
    with pytest.raises(DataError) as info:
        _manifest(csv).load()
    message = str(info.value)
    assert len(info.value.problems) == 1 and "dataset.delimiter=','" in message
    assert quoted in message, message
    written = "\\t" if separator == "\t" else separator  # what Hydra hands over for '\t'
    assert [r.image.name for r in _manifest(csv, delimiter=written).load()] == ["a.png", "b.png"]
    with pytest.raises(ValueError, match="must be one character"):
        _manifest(csv, delimiter=";;")


def test_manifest_paths_outside_root_need_the_key(tmp_path: Path) -> None:
    root = tmp_path / "data"
    _two_image_root(root)
    outside = save(tmp_path / "elsewhere/c.png", size=(40, 32))
    (root / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    csv = root / "list.csv"
    csv.write_text(
        f"path,label,mask\nimg/a.png,benign,\n../elsewhere/c.png,malignant,\n"
        f"{outside},malignant,\nimg/b.png,malignant,../elsewhere/c.png\nlinked/c.png,benign,\n"
    )
    with pytest.raises(DataError) as info:
        _manifest(csv, mask_column="mask").load()
    problems = [(p.path, p.reason) for p in info.value.problems]
    assert problems == [
        (str(outside), "image listed in " + f"{csv}:row 3 is outside dataset.root"),
        (str(outside), "image listed in " + f"{csv}:row 4 is outside dataset.root"),
        (str(outside), "mask listed in " + f"{csv}:row 5 is outside dataset.root"),
        (str(outside), "image listed in " + f"{csv}:row 6 is outside dataset.root"),
    ]  # linked/c.png (row 6): a symlink inside the root that resolves outside it, refused too
    assert "dataset.allow_outside_root=true" in str(info.value)
    allowed = _manifest(csv, mask_column="mask", allow_outside_root=True)
    with pytest.raises(DataError, match="rows 3 and 6 give this image different label"):
        allowed.load()  # gets past the root check: ../elsewhere/c.png and linked/c.png agree
    assert allowed.describe()["options"]["allow_outside_root"] is True


def test_any_case_mask_suffix_and_gif_images(tmp_path: Path) -> None:
    save(tmp_path / "benign/b1.png")
    save(tmp_path / "benign/b1_MASK.PNG")
    save(tmp_path / "malignant/m1.gif")
    save(tmp_path / "malignant/m1_Mask_2.gif")
    records = FolderSource(tmp_path).load()
    assert [(r.image.name, [m.name for m in r.masks]) for r in records] == [
        ("b1.png", ["b1_MASK.PNG"]),
        ("m1.gif", ["m1_Mask_2.gif"]),
    ]
