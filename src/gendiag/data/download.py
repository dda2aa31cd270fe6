"""Corpora given by URL: fetched once, checked against the sha256 in the config, then read locally.

A corpus file that changed upstream (or a truncated transfer) would silently change the study, so
a checksum mismatch is an error, and nothing is written under the target name until the checksum
matches.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path

from gendiag.io import atomic_path

log = logging.getLogger(__name__)
CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A corpus could not be fetched or failed its checksum; the message says what to do."""


def fetch(url: str, sha256: str, target: str | os.PathLike, timeout: float = 60.0) -> Path:
    """Download `url` to `target` if its sha256 matches; log progress every ~10%."""
    target = Path(target)
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, atomic_path(target) as tmp:
            total = int(response.headers.get("Content-Length") or 0)
            done, next_report = 0, 0.1
            with open(tmp, "wb") as out:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    if total and done / total >= next_report:
                        log.info("%s: %.0f%% of %.1f MB", target.name, 100 * done / total, total / 1e6)
                        next_report += 0.1
            if digest.hexdigest() != sha256.lower():
                raise DownloadError(
                    f"{url}: sha256 {digest.hexdigest()} does not match the config's {sha256} ({done} bytes read);"
                    " the file changed upstream or the transfer was cut. Check the source, then fix `sha256`"
                    " (or download the file yourself and set `path:`)"
                )
    except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
        reason = getattr(err, "reason", err)
        raise DownloadError(
            f"cannot download {url} ({reason}); this machine may be offline. Download it where you have a"
            f" network, check `sha256sum` gives {sha256}, and set the corpus `path:` to the local file"
        ) from None
    log.info("%s: %d bytes, sha256 ok", target, target.stat().st_size)
    return target
