"""The one image decoder, through every path that reads images: `fus2net-data`, training's data
pass, external scoring (`load_resized`) and `fus2net-predict`.

Each class of odd file holds the same way everywhere: over the pixel limit or under the minimum
size it is a bad file (named, honoured by `data.on_bad_image`), it is used upright by its EXIF
orientation, an animation or multi-page file gives its first frame with a notice, a mask suffix
matches in any case, and PIL's warnings become notices naming the file, never raw output.
"""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, ImageOps

from fus2net.cell.job_data import prepare_data
from fus2net.config.preflight import ConfigError
from fus2net.data.cache import load_resized
from fus2net.data.records import DataError, Record
from fus2net.data.sources import BusiSource, FolderSource, ManifestSource
from fus2net.data.validation import inspect_records
from fus2net.images.imageio import (
    DEFAULT_MAX_IMAGE_PIXELS,
    ImageLimits,
    ImageReadError,
    load_image,
    open_image,
)
from fus2net.inference import Member, ModelSpec
from fus2net.models import create_model
from jobs import compose_train, run_module, run_train, tiny

RAW_WARNING = ("UserWarning", "DecompressionBombWarning", "warnings.warn(", "Traceback")


# ---------------------------------------------------------------------------- odd files


def header_only_png(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height (a decompression bomb costs nothing to write:
    the decoder must refuse it from the header, before decoding a pixel)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    signature = b"\x89PNG\r\n\x1a\n"
    path.write_bytes(
        signature + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path


def noise(path: Path, size: tuple[int, int] = (64, 64), seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0]), dtype=np.uint8)).save(path)
    return path


def rotated_jpeg(path: Path) -> Path:
    """Stored 64 wide x 40 high with a white left stripe; EXIF orientation 6 (camera turned
    90 degrees), so it is upright at 40 x 64 with the stripe at the top."""
    pixels = np.zeros((40, 64, 3), np.uint8)
    pixels[:, :12] = 255
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(path, exif=exif, quality=95)
    return path


def animated_gif(path: Path) -> Path:
    """Three 48 px frames, dark to bright: the first (value 20) is the one used."""
    frames = [Image.new("L", (48, 48), value) for value in (20, 130, 240)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    return path


def two_page_tiff(path: Path) -> Path:
    pages = [Image.new("L", (48, 48), value) for value in (60, 200)]
    pages[0].save(path, save_all=True, append_images=pages[1:])
    return path


def warning_jpeg(path: Path) -> Path:
    """A readable JPEG whose EXIF block names a tag beyond its end: PIL warns while reading it."""
    tiff = b"II*\x00" + struct.pack("<IH", 8, 1) + struct.pack("<HHII", 0x010E, 2, 100, 999)
    Image.new("L", (48, 48), 90).save(path, exif=b"Exif\x00\x00" + tiff + b"\0\0\0\0")
    return path


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A class-per-folder dataset with one file of each class of odd input."""
    root = tmp_path_factory.mktemp("zoo")
    for label, name in enumerate(("benign", "malignant")):
        for i in range(6):
            noise(root / name / f"ok_{i}.png", seed=10 * label + i)
    noise(root / "benign/lesion.png", seed=99)
    Image.new("L", (64, 64), 255).save(root / "benign/lesion_MASK.PNG")
    rotated_jpeg(root / "benign/rotated.jpg")
    animated_gif(root / "benign/cine.gif")
    two_page_tiff(root / "benign/pages.tif")
    warning_jpeg(root / "benign/odd_exif.jpg")
    Image.new("L", (1, 1), 128).save(root / "malignant/pixel.png")
    header_only_png(root / "malignant/bomb.png", 20_000, 20_000)  # PIL's own limit refuses it
    header_only_png(root / "malignant/big.png", 10_001, 10_000)  # just over data.max_image_pixels
    return root


BAD = {
    "pixel.png": "below the minimum of 32 px on its short side (data.min_image_size)",
    "bomb.png": "over the limit of 100,000,000 pixels (data.max_image_pixels)",
    "big.png": "10001x10000 = 100,010,000 pixels, over the limit of 100,000,000",
}
NOTICES = {
    "cine.gif": "3 frames (an animation or multi-page file): the first is used",
    "pages.tif": "2 frames (an animation or multi-page file): the first is used",
    "odd_exif.jpg": "PIL warning: ",
}


# ---------------------------------------------------------------------------- fus2net-data


def test_fus2net_data_names_each_odd_file(zoo: Path, tmp_path: Path) -> None:
    """Bad files are problems (exit 1), the others notices; sizes upright; masks in any case."""
    args = ["dataset=folder", f"dataset.root={zoo}"]
    proc = run_module("fus2net.cli.data", args, tmp_path, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    for name, reason in BAD.items():
        assert f"{zoo / 'malignant' / name}: " in out and reason in out, name
    for name, text in NOTICES.items():
        assert f"  - {zoo / 'benign' / name}: {text}" in out, name
    assert "Notices: 3 (the files are used)" in out and "Problems: 3" in out
    assert not any(raw in out for raw in RAW_WARNING), out
    table = [line.split() for line in proc.stdout.splitlines()[1:4]]
    assert table[1:] == [["0", "benign", "11", "1"], ["1", "malignant", "9", "0"]]
    assert "Masks: 1 for 20 images" in out  # lesion_MASK.PNG is a mask, not an image
    assert "most common: 64x64 (13), 48x48 (3), 40x64 (1)" in out  # rotated.jpg upright

    skip = run_module(
        "fus2net.cli.data",
        ["dataset=folder", f"dataset.root={zoo}", "data.on_bad_image=skip"],
        tmp_path,
        check=False,
    )
    assert skip.returncode == 0, skip.stdout + skip.stderr
    assert "training leaves out 3 images and trains on 17 (11 benign, 6 malignant)" in skip.stdout


# ---------------------------------------------------------------------------- training


def _zoo_cfg(zoo: Path, root: Path, *overrides: str):
    return compose_train(
        "dataset=folder",
        f"dataset.root={zoo}",
        f"paths.root={root}",
        "data.image_size=32",
        "data.dedupe=false",
        *overrides,
    )


def test_training_stops_naming_each_bad_file_exit_2(zoo: Path, tmp_path: Path) -> None:
    args = tiny(
        "dataset=folder", f"dataset.root={zoo}", drop=("dataset.n_images", "dataset.image_size")
    )
    proc = run_train(args, tmp_path, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    for name, reason in BAD.items():
        assert str(zoo / "malignant" / name) in out and reason in out, name
    assert "data.on_bad_image=skip" in out and not any(raw in out for raw in RAW_WARNING), out
    assert not (tmp_path / "mlruns").exists(), "stopped before any run was created"


def test_training_skips_them_and_uses_each_file_upright_first_frame(
    zoo: Path, tmp_path: Path
) -> None:
    data = prepare_data(_zoo_cfg(zoo, tmp_path, "data.on_bad_image=skip"))
    assert sorted(Path(p.path).name for p in data.skipped) == sorted(BAD)
    assert data.description["skipped_bad_files"] == 3 and data.description["n_images"] == 17
    index = {r.image.name: i for i, r in enumerate(data.records)}
    with Image.open(zoo / "benign/rotated.jpg") as stored:
        upright = ImageOps.exif_transpose(stored).convert("RGB")
    upright = upright.resize((32, 32), Image.Resampling.BILINEAR)
    cached = np.asarray(data.cache.images[index["rotated.jpg"]])
    assert np.array_equal(cached, np.asarray(upright))
    assert cached[:4].mean() > 200 and cached[-4:].mean() < 60  # the stripe on top
    assert (np.asarray(data.cache.images[index["cine.gif"]]) == 20).all()  # the first frame
    assert (np.asarray(data.cache.images[index["pages.tif"]]) == 60).all()


def test_configured_limits_are_the_jobs(zoo: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError) as error:
        prepare_data(_zoo_cfg(zoo, tmp_path, "data.min_image_size=50"))
    named = {Path(p.path).name for p in error.value.problems}
    assert {"cine.gif", "pages.tif", "odd_exif.jpg", "rotated.jpg"} <= named  # 48 and 40 px
    assert "ok_0.png" not in named
    with pytest.raises(DataError) as error:
        prepare_data(_zoo_cfg(zoo, tmp_path, "data.max_image_pixels=3000", "data.min_image_size=1"))
    named = {Path(p.path).name for p in error.value.problems}
    assert {"ok_0.png", "lesion_MASK.PNG"} <= named  # 64 x 64 = 4096 pixels, masks too
    assert not {"pixel.png", "cine.gif"} & named  # 1 and 48 x 48 = 2304 pixels
    for override, message in [
        ("data.min_image_size=0", "data.min_image_size=0: must be >= 1"),
        ("data.max_image_pixels=abc", "data.max_image_pixels='abc': must be a whole number"),
        ("data.min_image_size=2.5", "data.min_image_size=2.5: must be a whole number"),
        ("data.max_image_pixels=1e9", "above PIL's own decompression-bomb limit"),
    ]:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            prepare_data(_zoo_cfg(zoo, tmp_path, override))
    assert not (tmp_path / ".cache").exists()


# ---------------------------------------------------------------------------- prediction


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-member model package (untrained) as a job's output folder holds it."""
    root = tmp_path_factory.mktemp("package")
    torch.manual_seed(0)
    (root / "fold_0").mkdir()
    model = create_model("fus2net", in_chans=3, num_classes=2)
    torch.save(model.state_dict(), root / "fold_0" / "model.pt")
    ModelSpec(
        model={"name": "fus2net", "pool": "auto"},
        in_chans=3,
        image_size=64,
        class_names=["benign", "malignant"],
        members=[Member("fold_0/model.pt", 0)],
    ).write(root)
    return root


def test_fus2net_predict_odd_files(zoo: Path, package: Path, tmp_path: Path) -> None:
    """Upright overlays, first frames, tiny and huge images refused by name, no raw warnings."""
    files = [zoo / "benign" / n for n in ("rotated.jpg", "cine.gif", "odd_exif.jpg")]
    files += [zoo / "malignant" / n for n in ("pixel.png", "bomb.png")]
    out_dir = tmp_path / "out"
    args = [str(package), *map(str, files), "--out", str(out_dir)]
    proc = run_module("fus2net.cli.predict", args, tmp_path, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out  # the tiny and the huge image failed, the others predicted
    assert not any(raw in out for raw in RAW_WARNING), out
    assert f"{zoo / 'benign/cine.gif'}: 3 frames" in out
    assert f"{zoo / 'benign/odd_exif.jpg'}: PIL warning: " in out
    frame = pd.read_csv(out_dir / "predictions.csv", keep_default_na=False).set_index("path")
    assert "below the minimum of 2 px" in frame.loc[str(zoo / "malignant/pixel.png"), "error"]
    assert "data.max_image_pixels" in frame.loc[str(zoo / "malignant/bomb.png"), "error"]
    assert frame.loc[str(zoo / "malignant/pixel.png"), "prob_malignant"] == ""  # no probability
    with Image.open(frame.loc[str(zoo / "benign/rotated.jpg"), "overlay"]) as drawn:
        # A panel of the upright 40x64 image beside its map is 1.2x as wide as tall; of the
        # sideways 64x40 image it would be 2.4x.
        assert drawn.width / drawn.height < 1.6


# ---------------------------------------------------------------------------- the decoder


def test_external_scoring_reads_through_the_same_limits(zoo: Path) -> None:
    with pytest.raises(ImageReadError, match=r"data\.min_image_size"):
        load_resized(zoo / "malignant/pixel.png", 32, 3, ImageLimits())
    with pytest.raises(ImageReadError, match=r"bomb\.png: image is over the limit"):
        load_resized(zoo / "malignant/bomb.png", 32, 3)  # the pixel limit holds by default
    assert load_resized(zoo / "benign/rotated.jpg", 32, 1).shape == (32, 32, 1)


def test_limits_check_the_header_before_decoding(tmp_path: Path) -> None:
    path = header_only_png(tmp_path / "claims.png", 12_000, 9_000)  # 108 M: no pixel data at all
    with pytest.raises(ImageReadError, match=r"12000x9000 = 108,000,000 pixels, over the limit"):
        open_image(path, limits=ImageLimits())
    assert DEFAULT_MAX_IMAGE_PIXELS == 100_000_000 and Image.MAX_IMAGE_PIXELS == 89_478_485
    with pytest.raises(ImageReadError, match="corrupt or truncated"):  # under the limit: decoded
        open_image(path, limits=ImageLimits(max_pixels=150_000_000))


def test_first_frame_and_orientation(tmp_path: Path) -> None:
    gif = open_image(animated_gif(tmp_path / "a.gif"))
    assert gif.frames == 3 and gif.mode == "P" and gif.size == (48, 48)
    assert (load_image(tmp_path / "a.gif", 1) == 20).all()
    rotated = open_image(rotated_jpeg(tmp_path / "r.jpg"))
    assert rotated.size == (40, 64) and rotated.notices == ()


def test_gif_and_any_case_masks_in_every_source(tmp_path: Path) -> None:
    for name in ("benign", "malignant"):
        noise(tmp_path / name / "b1.png")
    Image.new("L", (64, 64), 255).save(tmp_path / "benign/b1_MASK.PNG")
    Image.new("L", (64, 64), 255).save(tmp_path / "benign/b1_Mask_1.png")
    animated_gif(tmp_path / "malignant/cine.gif")
    for source in (FolderSource(tmp_path, classes=["benign", "malignant"]), BusiSource(tmp_path)):
        records = {r.image.relative_to(tmp_path).as_posix(): r for r in source.load()}
        assert sorted(records) == ["benign/b1.png", "malignant/b1.png", "malignant/cine.gif"]
        assert [m.name for m in records["benign/b1.png"].masks] == ["b1_MASK.PNG", "b1_Mask_1.png"]
    (tmp_path / "list.csv").write_text(
        "path,label\nbenign/b1.png,benign\nmalignant/cine.gif,malignant\n"
    )
    manifest = ManifestSource(tmp_path / "list.csv", ["benign", "malignant"], "label", "path")
    assert [r.image.name for r in manifest.load()] == ["b1.png", "cine.gif"]


def test_warnings_are_kept_per_file_across_threads(tmp_path: Path) -> None:
    """20 threads decode at once: each warning lands with its own file, none escapes, and the
    process's warning state is as it was."""
    records = []
    for i in range(40):
        path = warning_jpeg(tmp_path / f"w{i}.jpg") if i % 2 else noise(tmp_path / f"n{i}.png")
        records.append(Record(path, i % 2))
    before = (list(warnings.filters), warnings.showwarning)
    with warnings.catch_warnings(record=True) as leaked:
        warnings.simplefilter("always")
        infos = inspect_records(records, max_workers=20, limits=ImageLimits())
    assert leaked == []
    for record, info in zip(records, infos, strict=True):
        expected = 1 if record.label else 0
        assert len(info.notices) == expected, (record.image, info.notices)
        assert all(n.path == str(record.image) for n in info.notices)
    assert (list(warnings.filters), warnings.showwarning) == before


def test_unreadable_orientation_is_a_notice_not_a_bad_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(image: Image.Image, *, in_place: bool = False) -> None:
        raise SyntaxError("bad IFD")

    monkeypatch.setattr(ImageOps, "exif_transpose", broken)
    decoded = open_image(rotated_jpeg(tmp_path / "r.jpg"))
    assert decoded.size == (64, 40)  # as stored
    assert decoded.notices == ("EXIF orientation unreadable (bad IFD): used as stored",)
