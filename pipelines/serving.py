"""ServingSwitch: every change of the version a model serves, persisted (pipelines/versions.py) before it is
swapped in: the end of a training, a rollback, a promoted challenger, and on serve nodes the choice another
node made (announced through the data node). Changes of one model are serialised by its serve lock, which
is never held over a training."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

from pipelines.flight_client import FlightDataClient
from pipelines.portfolio import load_model
from pipelines.registry import ModelRegistry, VersionMeta
from pipelines.state import LOAD_IDS, ModelState, ServedModel, find_model
from pipelines.versions import Candidate, Serving
from spicepod import InvalidInput, NotFound

log = logging.getLogger("flightcast.pipelines")


class ServingSwitch:
    """Which stored version serves each model, and the changes of it. Thread-safe."""

    def __init__(self, states: Mapping[str, ModelState], registry: ModelRegistry, client: FlightDataClient):
        self._states = states
        self.registry = registry
        self.client = client
        # On a serve node: records a choice on the data node, which announces it to every serve node (this one
        # too, through `follow`) before it returns the choice, with its sequence number.
        self.announce: Callable[[str, int, str, str | None], dict] | None = None
        self._pending: dict[str, dict] = {}  # choices announced before the model had a version to serve

    def commit(self, state: ModelState, served: ServedModel, reason: str, candidate: Candidate | None) -> None:
        """The end of a training: persist the serving choice, then swap the served version in (a crash between
        leaves the choice the restart serves). `reason` is trained, loaded, or kept (a candidate lost)."""
        with state.serve_lock:
            meta = served.meta
            if state.spec.kind != "file":
                record = self.registry.serving(state.name)
                start = record or Serving(meta.run, meta.spec_hash, reason=reason)
                moved = start.moved_to(meta.run, meta.spec_hash, reason if reason != "kept" else start.reason,
                                       candidate)
                if moved != record:
                    self.registry.set_serving(state.name, moved)
            state.succeed(served, candidate)
        pending = self._pending.pop(state.name, None)
        if pending is not None:
            self.follow(pending)
        self.restore_challengers()

    def promote_challenger(self, state: ModelState, name: str) -> None:
        """Answer for the model with challenger `name`'s forecasts (persisted, on every serve node; a rollback
        ends it)."""
        with state.serve_lock:
            own = state.own
            if self._states[name].current is None or own is None or state.challenger == name:
                return
            if self.announce is None:
                record = self.registry.serving(state.name) or Serving(own.meta.run, own.meta.spec_hash)
                self._promote(state, record, name)
                return
        self.follow(self.announce(state.name, own.meta.run, own.meta.spec_hash, name))

    def _promote(self, state: ModelState, record: Serving, name: str) -> None:
        """Persist, then swap in, challenger `name` (the caller holds the serve lock)."""
        rival = self._states[name].current
        if rival is None:
            log.warning("model %s: challenger %s has no version to serve here", state.name, name)
            self.registry.set_serving(state.name, record)
            return
        self.registry.set_serving(state.name, replace(record, challenger=name, reason="promoted"))
        self._swap_in(state, name, rival)

    def _swap_in(self, state: ModelState, name: str, rival: ServedModel) -> None:
        meta = replace(rival.meta, model_name=state.name, model_version=f"{name}/{rival.meta.model_version}")
        state.swap(replace(rival, meta=meta, cache_id=next(LOAD_IDS)), state.candidate, challenger=name)
        log.info("model %s: challenger %s (version %s) serves in its place", state.name, name,
                 rival.meta.model_version)

    def restore_challengers(self) -> None:
        """A promoted challenger serves its current version (it may have retrained or rolled back), and after a
        restart serves again once both it and the model have a version. Called with no serve lock held."""
        for state in self._states.values():
            if state.own is None or not state.spec.challengers:
                continue
            with state.serve_lock:
                if state.challenger is not None:
                    rival = self._states[state.challenger].current
                    if rival is not None and state.current is not None and state.current.model is not rival.model:
                        self._swap_in(state, state.challenger, rival)
                    continue
                record = self.registry.serving(state.name)
                name = record.challenger if record is not None else None
                rival = self._states[name].current if name in self._states else None
                if rival is not None and state.challenger is None and record.run == state.own.meta.run:
                    self._swap_in(state, name, rival)

    # --- rollback, and following the other serve nodes -----------------------------------------------------

    def rollback(self, name: str, version: str | None) -> ModelState:
        """Serve a stored version again (default: the one served before the current); the choice is persisted
        before it is swapped in, and no forecast of the version it replaces is answered after this returns."""
        state = find_model(self._states, name)
        if state.spec.kind == "file":
            raise InvalidInput(f"model '{name}' is loaded from a model file; it has no stored versions")
        with state.serve_lock:
            state.served()
            current = state.own  # while a challenger serves, rollback goes back to the model's own versions
            record = self.registry.serving(name) or Serving(current.meta.run, current.meta.spec_hash)
            meta, path = self._rollback_target(state, record, current, version)
            if meta.run == current.meta.run and state.challenger is None:
                return state
            if self.announce is None:
                self._serve_stored(state, record, current, meta, path, "rollback")
        if self.announce is None:
            self.restore_challengers()  # a model whose promoted challenger this is serves the version rolled back to
            return state
        # Not under the serve lock: this node's own subscription applies the choice while the data node waits.
        self.follow(self.announce(name, meta.run, meta.spec_hash, None))  # again, in case the subscription was down
        return state

    def follow(self, choice: dict) -> None:
        """Serve the version the serve nodes chose (`{"model", "run", "spec_hash", "challenger", "seq"}`), once."""
        self._follow(choice)
        self.restore_challengers()

    def _follow(self, choice: dict) -> None:
        state = self._states.get(choice.get("model", ""))
        if state is None or state.spec.kind == "file":
            return
        with state.serve_lock:
            current = state.own
            if current is None:  # still starting: applied once a version serves
                self._pending[state.name] = choice
                return
            record = self.registry.serving(state.name) or Serving(current.meta.run, current.meta.spec_hash)
            if choice["seq"] <= record.announced:
                return
            record = replace(record, announced=choice["seq"])
            stored = self.registry.version(state.name, str(choice["run"]))
            if stored is None or not stored[0].spec_hash == choice["spec_hash"] == current.meta.spec_hash:
                log.warning("model %s: another serve node serves run %s, which is not stored here; keeping "
                            "version %s", state.name, choice["run"], current.meta.model_version)
                self.registry.set_serving(state.name, record)
            elif choice.get("challenger") in self._states and stored[0].run == current.meta.run:
                if state.challenger == choice["challenger"]:
                    self.registry.set_serving(state.name, replace(record, challenger=state.challenger))
                else:
                    self._promote(state, record, choice["challenger"])
            elif stored[0].run == current.meta.run and state.challenger is None:
                self.registry.set_serving(state.name, record)
            else:
                self._serve_stored(state, record, current, *stored, "rollback")

    def _rollback_target(
        self, state: ModelState, record: Serving, current: ServedModel, version: str | None,
    ) -> tuple[VersionMeta, Path]:
        name = state.name
        if version is None and state.challenger is not None:
            return self.registry.version(name, str(current.meta.run))
        if version is None:
            for run in reversed(record.previous):
                stored = self.registry.version(name, str(run))
                if run != current.meta.run and stored is not None and stored[0].spec_hash == current.meta.spec_hash:
                    return stored
            raise InvalidInput(f"model '{name}' has no earlier version to roll back to; "
                               f"GET /v1/models/{name}/versions lists the stored ones")
        stored = self.registry.version(name, version)
        if stored is None:
            raise NotFound(f"model '{name}' has no stored version '{version}'; "
                           f"GET /v1/models/{name}/versions lists them")
        if stored[0].spec_hash != current.meta.spec_hash:
            raise InvalidInput(f"version '{version}' of model '{name}' was trained from another spec "
                               "(its params or data set-up changed since); it cannot serve")
        return stored

    def _serve_stored(
        self, state: ModelState, record: Serving, current: ServedModel, meta: VersionMeta, path: Path, reason: str,
    ) -> None:
        """Load a stored run and serve it (the caller holds the serve lock)."""
        model = load_model(path)
        rows = int(self.client.dataset_info(state.spec.dataset)["rows"])  # `after_rows` counts from now
        served = ServedModel(meta, model, current.grid, next(LOAD_IDS), rows, state.panel)
        candidate = state.candidate if state.candidate is not None and state.candidate.run != meta.run else None
        self.registry.set_serving(state.name, record.moved_to(meta.run, meta.spec_hash, reason, candidate))
        state.swap(served, candidate)
        log.info("model %s: version %s serves (%s)", state.name, meta.model_version, reason)

    def versions(self, name: str) -> tuple[ModelState, list[VersionMeta]]:
        """A model's stored versions, oldest first."""
        state = find_model(self._states, name)
        return state, [meta for meta, _ in self.registry.versions(name)]
