"""Download RSNA, Kermany or NIH ChestX-ray14 from Kaggle with the ``kaggle`` package and unpack to the layout
the readers expect.

Needs a Kaggle account and one of the ways the current Kaggle CLI (kaggle >= 1.8) authenticates: an API token
(https://www.kaggle.com/settings/api -> Generate New Token) in ``KAGGLE_API_TOKEN`` or saved as
``~/.kaggle/access_token``, or ``kaggle auth login`` (kaggle >= 2.2). The legacy ``~/.kaggle/kaggle.json`` (or
``KAGGLE_USERNAME`` and ``KAGGLE_KEY``) still works. RSNA is a competition: its rules must be accepted once on
the website before the API may download it, and Kaggle may ask to verify the account by phone first (a 403
until then).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.secrets import redact


@dataclass(frozen=True)
class KaggleSource:
    kind: str  # competition | dataset
    ref: str
    page: str
    licence: str


SOURCES = {
    "rsna": KaggleSource(
        "competition",
        "rsna-pneumonia-detection-challenge",
        "https://www.kaggle.com/c/rsna-pneumonia-detection-challenge/rules",
        "RSNA challenge terms: non-commercial research use, attribution required",
    ),
    "kermany": KaggleSource(
        "dataset",
        "paultimothymooney/chest-xray-pneumonia",
        "https://www.kaggle.com/datasets/paultimothymooney/chest-xray-pneumonia",
        "CC BY 4.0 (Kermany et al., Mendeley Data)",
    ),
    "nih": KaggleSource(
        "dataset",
        "nih-chest-xrays/data",
        "https://www.kaggle.com/datasets/nih-chest-xrays/data",
        "NIH Clinical Center: unrestricted use; cite Wang et al. 2017 and acknowledge the NIH Clinical Center",
    ),
}
CREDENTIALS_HELP = (
    "generate an API token at https://www.kaggle.com/settings/api and set KAGGLE_API_TOKEN=<token> or save it "
    "as ~/.kaggle/access_token (chmod 600), or run `kaggle auth login` (kaggle >= 2.2); the legacy "
    "~/.kaggle/kaggle.json or KAGGLE_USERNAME and KAGGLE_KEY still work"
)
SKIPPED_IN_ZIP = ("__MACOSX/",)  # Finder resource forks: never images


def download(dataset: str, root: str | os.PathLike, keep_zip: bool = False) -> Path:
    """Download ``dataset`` (rsna | kermany | nih) into ``root`` and unpack it there; returns ``root``."""
    if dataset not in SOURCES:
        raise CxrsynError(f"unknown dataset {dataset!r}; download one of {', '.join(SOURCES)}")
    source = SOURCES[dataset]
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    api = _authenticated_api()
    print(f"downloading {source.ref} from Kaggle into {root} (licence: {source.licence})")
    try:
        if source.kind == "competition":
            api.competition_download_files(source.ref, path=str(root), quiet=False)
        else:
            api.dataset_download_files(source.ref, path=str(root), quiet=False, unzip=False)
    except Exception as error:  # noqa: BLE001 - the client raises HTTP errors of several types
        text = redact(" ".join(str(error).split()))  # no KAGGLE_KEY in the message
        if "403" in text or "Forbidden" in text:
            rules = (
                f"accept the competition rules at {source.page} while logged in (Kaggle may first ask you to "
                "verify your account by phone at https://www.kaggle.com/settings)"
                if source.kind == "competition"
                else f"check that the account may download {source.page} (logged in, terms accepted)"
            )
            raise CxrsynError(
                f"Kaggle refused the download of {source.ref} (403): {rules}, then run the command again"
            ) from None
        if "401" in text or "Unauthorized" in text:
            raise CxrsynError(f"Kaggle rejected the credentials (401); {CREDENTIALS_HELP}") from None
        raise CxrsynError(
            f"download of {source.ref} failed ({text[:200]}); check the network and retry"
        ) from None
    archive = root / f"{source.ref.split('/')[-1]}.zip"
    if not archive.is_file():
        raise CxrsynError(f"Kaggle reported success but {archive} is missing; run the command again")
    unpack(archive, root)
    if not keep_zip:
        archive.unlink()
    print(
        f"unpacked into {root}; check it with: python -m cxrsyn.data summarize data={dataset} data.root={root}"
    )
    return root


def _authenticated_api():  # noqa: ANN202 - kaggle's class, imported lazily
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            from kaggle.api.kaggle_api_extended import KaggleApi  # its package import tries to log in
    except ImportError as error:
        raise CxrsynError(
            f"the kaggle package cannot be imported (missing module {error.name!r}): pip install 'cxrsyn[download]'"
        ) from None
    except SystemExit:  # kaggle 1.8 to 2.1 exit while importing when they find no credentials
        raise CxrsynError(f"no usable Kaggle credentials; {CREDENTIALS_HELP}") from None
    api = KaggleApi()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            api.authenticate()
    except (SystemExit, Exception) as error:  # noqa: BLE001 - kaggle exits when it finds no credentials
        detail = "" if isinstance(error, SystemExit) else f" ({redact(' '.join(str(error).split()))[:120]})"
        raise CxrsynError(f"no usable Kaggle credentials{detail}; {CREDENTIALS_HELP}") from None
    return api


def unpack(archive: str | os.PathLike, root: str | os.PathLike) -> int:
    """Extract ``archive`` into ``root`` (no ``__MACOSX/``, no path escaping ``root``); returns files written.

    Inner zips that Kaggle wraps competition files in are unpacked too: ``X.zip`` whose entries sit under
    ``X/`` beside it, one whose entries are bare file names into ``X/`` (``stage_2_train_images.zip`` holds
    the ``.dcm`` files themselves, which belong in ``stage_2_train_images/``).
    """
    root = Path(root).resolve()
    written = 0
    inner_zips: list[Path] = []
    try:
        with zipfile.ZipFile(archive) as bundle:
            for member in bundle.infolist():
                name = member.filename
                if member.is_dir() or name.startswith(SKIPPED_IN_ZIP) or "/__MACOSX/" in name:
                    continue
                target = (root / name).resolve()
                if root not in target.parents:
                    raise CxrsynError(
                        f"{archive}: entry {name!r} would be written outside {root}; not unpacking it"
                    )
                target.parent.mkdir(parents=True, exist_ok=True)
                with bundle.open(member) as source, open(target, "wb") as sink:
                    shutil.copyfileobj(source, sink, 1 << 20)
                written += 1
                if target.suffix == ".zip":
                    inner_zips.append(target)
    except zipfile.BadZipFile:
        raise CxrsynError(f"{archive} is not a complete zip file; delete it and download again") from None
    for inner in inner_zips:
        folder = inner.parent if _entries_under(inner, inner.stem) else inner.parent / inner.stem
        written += unpack(inner, folder) - 1
        inner.unlink()
    return written


def _entries_under(archive: Path, folder: str) -> bool:
    """Whether every file entry of ``archive`` already sits in ``folder/``."""
    try:
        with zipfile.ZipFile(archive) as bundle:
            names = [member.filename for member in bundle.infolist() if not member.is_dir()]
    except zipfile.BadZipFile:
        raise CxrsynError(f"{archive} is not a complete zip file; delete it and download again") from None
    return bool(names) and all(name.startswith(f"{folder}/") for name in names)
