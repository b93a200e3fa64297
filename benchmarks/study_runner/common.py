"""Small helpers shared by the study runner's modules: the repository root,
atomic file writes, JSON reads and local times."""

from __future__ import annotations

import datetime
import json
import os
import threading

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write_atomically(path, text):
    """Writes ``text`` to ``path`` under a temporary name, then renames it over ``path``."""
    tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def read_json(path):
    """The JSON content of ``path``, or None when it does not exist."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def local_time(timestamp=None):
    """The local time to the second in ISO format: now, or of a POSIX ``timestamp``."""
    moment = (datetime.datetime.now() if timestamp is None
              else datetime.datetime.fromtimestamp(timestamp))
    return moment.astimezone().isoformat(timespec="seconds")
