"""Sources file, verified downloads and safe extraction.

Downloads go through ``keras.utils.get_file`` (progress bar, hash check); this
module adds what a dataset download needs around it:

* the sources file (``sources.json`` beside this module, or ``--sources``):
  one entry per file with ``name``, ``url``, ``file_name`` and a checksum
  (``sha256``, or ``md5`` where only that is published; ``null`` where none
  is);
* a download is written as ``<file_name>.part`` and renamed to ``<file_name>``
  only when it is complete and its checksum matches, so a file under its final
  name is always whole; an interrupted or failed download leaves nothing
  behind and the next run downloads it again;
* a checksum mismatch or an unreadable archive is a ``DownloadError`` naming
  the file; the bad file is deleted;
* where no checksum is published the sha256 received is printed, for pinning;
* archives (tar, tar.gz, zip) are extracted with the standard library's
  ``tarfile`` (``filter="data"``: no absolute paths, no ``..``, no devices)
  and ``zipfile`` (member names checked the same way).
"""

import dataclasses
import hashlib
import json
import os
import shutil
import tarfile
import zipfile
from typing import Callable, Dict, Iterable, Optional

DEFAULT_SOURCES = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                               "sources.json")
PART_SUFFIX = ".part"


class DownloadError(Exception):
    """A download, verification or extraction failed; the message names the file."""


def log(message: str) -> None:
    """Progress output of the download command (stdout, flushed)."""
    print(message, flush=True)


@dataclasses.dataclass(frozen=True)
class Source:
    """One downloadable file of the sources file."""
    name: str
    url: str
    file_name: str
    sha256: Optional[str] = None
    md5: Optional[str] = None
    checksum_from: Optional[str] = None
    sources_file: str = ""

    @property
    def checksum(self):
        """``(algorithm, hex digest)`` of the published checksum, or None."""
        if self.sha256:
            return "sha256", self.sha256.lower()
        if self.md5:
            return "md5", self.md5.lower()
        return None


def load_sources(path: str = DEFAULT_SOURCES) -> Dict[str, Source]:
    """Reads a sources file: {name: Source}.

    Raises:
      DownloadError: missing or malformed file, or a bad entry (named).
    """
    if not os.path.isfile(path):
        raise DownloadError(f"sources file {path} not found")
    try:
        with open(path) as f:
            raw = json.load(f)
    except json.JSONDecodeError as e:
        raise DownloadError(f"sources file {path} is not valid JSON: {e}") from None
    entries = raw.get("sources") if isinstance(raw, dict) else None
    if not isinstance(entries, list):
        raise DownloadError(f"sources file {path}: expected an object with a "
                            "'sources' list")
    sources = {}
    for index, entry in enumerate(entries):
        where = f"sources file {path}, entry {index}"
        if not isinstance(entry, dict):
            raise DownloadError(f"{where}: expected an object")
        for key in ("name", "url", "file_name"):
            if not isinstance(entry.get(key), str) or not entry[key]:
                raise DownloadError(f"{where}: '{key}' must be a non-empty string")
        name = entry["name"]
        if name in sources:
            raise DownloadError(f"{where}: name {name!r} appears twice")
        if os.path.basename(entry["file_name"]) != entry["file_name"]:
            raise DownloadError(f"{where} ({name}): file_name {entry['file_name']!r} "
                                "must be a plain file name")
        for key, length in (("sha256", 64), ("md5", 32)):
            value = entry.get(key)
            if value is not None and (not isinstance(value, str) or len(value) != length
                                      or any(c not in "0123456789abcdefABCDEF"
                                             for c in value)):
                raise DownloadError(f"{where} ({name}): {key} must be null or "
                                    f"{length} hex digits, got {value!r}")
        sources[name] = Source(name=name, url=entry["url"], file_name=entry["file_name"],
                               sha256=entry.get("sha256"), md5=entry.get("md5"),
                               checksum_from=entry.get("checksum_from"),
                               sources_file=os.path.abspath(path))
    return sources


def require(sources: Dict[str, Source], name: str) -> Source:
    """The entry ``name``; DownloadError naming the sources file when absent."""
    if name not in sources:
        any_source = next(iter(sources.values()), None)
        path = any_source.sources_file if any_source else "the sources file"
        raise DownloadError(f"{path} has no entry named {name!r}")
    return sources[name]


def hash_file(path: str, algorithm: str = "sha256") -> str:
    """Hex digest of a file (read in 1 MiB chunks)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


def fetch(source: Source, download_dir: str) -> str:
    """Downloads ``source`` into ``download_dir`` unless it is there; returns its path.

    A file already under its final name is complete (downloads are renamed
    into place only when whole); with a published checksum it is verified
    again and downloaded anew when it does not match.

    Raises:
      DownloadError: the download failed or the checksum does not match (the
        partial or bad file is deleted).
    """
    import keras  # pylint: disable=g-import-not-at-top  (heavy; only when downloading)

    download_dir = os.path.abspath(download_dir)
    os.makedirs(download_dir, exist_ok=True)
    final = os.path.join(download_dir, source.file_name)
    checksum = source.checksum
    if os.path.isfile(final):
        if checksum is None:
            log(f"{source.name}: {final} already downloaded")
            return final
        algorithm, expected = checksum
        log(f"{source.name}: verifying {final} ({algorithm})")
        if hash_file(final, algorithm) == expected:
            return final
        log(f"{source.name}: {final} does not match its {algorithm} checksum; "
            "downloading it again")
        os.remove(final)
    part = final + PART_SUFFIX
    log(f"{source.name}: downloading {source.url} to {final}")
    try:
        keras.utils.get_file(
            fname=os.path.basename(part), origin=source.url,
            file_hash=checksum[1] if checksum else None,
            hash_algorithm=checksum[0] if checksum else "auto",
            cache_dir=download_dir, cache_subdir=download_dir, force_download=True)
    except ValueError as e:
        if checksum is not None and "hash does not match" in str(e) and os.path.isfile(part):
            algorithm, expected = checksum
            received = hash_file(part, algorithm)
            _remove(part)
            raise DownloadError(
                f"{final}: {algorithm} checksum mismatch for {source.url}: received "
                f"{received}, expected {expected} (entry {source.name!r} of "
                f"{source.sources_file}); the file was deleted. A changed or "
                "corrupted download: check the URL, or pin the new checksum if the "
                "file is the right one.") from None
        _remove(part)
        raise DownloadError(f"{final}: downloading {source.url} failed: {e}") from None
    except (Exception, KeyboardInterrupt) as e:  # pylint: disable=broad-except
        _remove(part)
        if isinstance(e, KeyboardInterrupt):
            raise
        raise DownloadError(
            f"{final}: downloading {source.url} failed: {e}. Nothing was kept; "
            "run the command again to download it again.") from None
    if not os.path.isfile(part):
        raise DownloadError(f"{final}: downloading {source.url} produced no file")
    if checksum is None:
        received = hash_file(part)
        log(f"{source.name}: no published checksum for {source.file_name}; received "
            f"sha256 {received} (pin it as \"sha256\" in {source.sources_file} or your "
            "--sources file to verify later downloads)")
    else:
        log(f"{source.name}: {checksum[0]} verified")
    os.replace(part, final)
    return final


def _check_member_name(archive: str, name: str) -> None:
    normalized = os.path.normpath(name)
    if (os.path.isabs(name) or normalized == ".." or normalized.startswith(".." + os.sep)
            or name.startswith(("/", "\\"))):
        raise DownloadError(f"{archive}: unsafe member path {name!r}")


def extract(archive: str, destination: str,
            keep: Optional[Callable[[str], bool]] = None,
            progress_every: int = 5000) -> int:
    """Extracts ``archive`` (tar, tar.gz, tgz, zip) into ``destination``.

    Args:
      archive: the archive file.
      destination: directory to extract into (created).
      keep: optional predicate on member names; members it rejects are skipped.
      progress_every: print progress every this many members.

    Returns:
      The number of members extracted.

    Raises:
      DownloadError: naming ``archive`` when it is corrupt, truncated or holds
        unsafe paths; the archive is deleted (a rerun downloads it again) and
        whatever was extracted is left for the caller's staging directory to
        remove.
    """
    os.makedirs(destination, exist_ok=True)
    log(f"extracting {archive}")
    count = 0
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                for info in z.infolist():
                    if keep is not None and not keep(info.filename):
                        continue
                    _check_member_name(archive, info.filename)
                    z.extract(info, destination)
                    count += 1
                    if count % progress_every == 0:
                        log(f"  {count} files")
        else:
            with tarfile.open(archive, "r:*") as t:
                for member in t:
                    if keep is not None and not keep(member.name):
                        continue
                    _check_member_name(archive, member.name)
                    t.extract(member, destination, filter="data")
                    count += 1
                    if count % progress_every == 0:
                        log(f"  {count} files")
    except DownloadError:
        _remove(archive)
        raise
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        _remove(archive)
        raise DownloadError(
            f"{archive}: corrupt or unreadable archive ({type(e).__name__}: {e}); "
            "it was deleted, run the command again to download it again") from None
    if count == 0:
        _remove(archive)
        raise DownloadError(f"{archive}: the archive holds none of the expected files; "
                            "it was deleted")
    log(f"  {count} files extracted")
    return count


def find_dirs(root: str, name: str) -> Iterable[str]:
    """Directories called ``name`` under ``root`` (sorted walk)."""
    for directory, subdirs, _ in sorted(os.walk(root)):
        subdirs.sort()
        if os.path.basename(directory) == name:
            yield directory


def find_one_dir(root: str, name: str, must_contain: Iterable[str], what: str) -> str:
    """The one directory ``name`` under ``root`` that holds ``must_contain``."""
    must_contain = tuple(must_contain)
    matches = [d for d in find_dirs(root, name)
               if all(os.path.exists(os.path.join(d, m)) for m in must_contain)]
    if not matches:
        raise DownloadError(f"{what}: no directory {name}/ holding "
                            f"{', '.join(must_contain)} in the extracted archive")
    return matches[0]


def safe_rmtree(path: str) -> None:
    """Removes a directory tree (or a file), ignoring errors."""
    _remove(path)
