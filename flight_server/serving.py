"""ServingChoices: the version each model serves, as serve nodes agreed on it through the data node.

Serve nodes keep their own registries (each trains the same versions from the same data), so a rollback on
one must reach the others: the node records its choice here (Flight action `flightcast.serving`), the data
node announces it over the commit notices (every subscriber acknowledges before the action returns), and a
serve node that was away asks for the choices (`flightcast.servings`) when it subscribes again. A choice is a
model's own run, or a challenger promoted to answer for it (each node scores live what it served, so one node
decides and the others follow). Each choice
carries a sequence number, so a node applies a choice once and never an older one after a newer one.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from spicepod import InvalidInput

log = logging.getLogger("flightcast.serving")

FILE = "serving.json"


class ServingChoices:
    """Choices by model, persisted atomically in the data node's data dir. Thread-safe."""

    def __init__(self, data_dir: Path):
        self.path = Path(data_dir) / FILE
        self._lock = threading.Lock()
        self._choices: dict[str, dict[str, Any]] = {}
        try:
            self._choices = json.loads(self.path.read_text())["models"]
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("cannot read %s (%s); serve nodes keep the versions they serve", self.path, exc)

    def all(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {name: dict(choice) for name, choice in self._choices.items()}

    def record(self, body: bytes) -> dict[str, Any]:
        """Record a choice from an action body; returns it with its sequence number."""
        try:
            doc = json.loads(body)
            challenger = doc.get("challenger")
            choice = {"model": str(doc["model"]), "run": int(doc["run"]), "spec_hash": str(doc["spec_hash"]),
                      "challenger": None if challenger is None else str(challenger)}
        except (ValueError, KeyError, TypeError, AttributeError):
            raise InvalidInput('the body must be JSON {"model": NAME, "run": N, "spec_hash": HASH, '
                               '"challenger": NAME or null}') from None
        with self._lock:
            choice["seq"] = 1 + max((c["seq"] for c in self._choices.values()), default=0)
            choices = {**self._choices, choice["model"]: choice}
            self._write(choices)
            self._choices = choices
        return dict(choice)

    def _write(self, choices: dict[str, dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".serving-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump({"models": choices}, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
