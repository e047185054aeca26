"""LightGBM's single-row fast path (LGBM_BoosterPredictForMatSingleRowFast), reached through the library
lightgbm loaded: the prediction Booster.predict gives for one row, the same bits, in a quarter of its time
(Booster.predict parses its parameters and sizes its buffers on every call). A forecast of one window
predicts a row per step, so that per-call cost was most of it. Where the path is missing the callers use
Booster.predict, as before.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import lightgbm as lgb

# LightGBM's C API: C_API_PREDICT_NORMAL and C_API_DTYPE_FLOAT64 (c_api.h).
_PREDICT_NORMAL = 0
_DTYPE_FLOAT64 = 1


class SingleRowConfig:
    """A booster set up for the single-row path, for rows of `width` float64 features."""

    def __init__(self, booster: lgb.Booster, handle: ctypes.c_void_p, lib: ctypes.CDLL):
        self.booster = booster  # the configuration points into the booster: it must live as long
        self._handle = handle
        self._lib = lib

    @classmethod
    def made(cls, booster: lgb.Booster, width: int) -> SingleRowConfig | None:
        """None where this LightGBM has no single-row path, or the booster gives more than one value a row
        (a user's multiclass model, say): the caller then uses Booster.predict."""
        if booster.num_model_per_iteration() != 1:
            return None  # the reader's output holds one value
        try:
            from lightgbm.basic import _LIB as lib

            init = lib.LGBM_BoosterPredictForMatSingleRowFastInit
            lib.LGBM_BoosterPredictForMatSingleRowFast, lib.LGBM_FastConfigFree  # noqa: B018 (all three or none)
        except (ImportError, AttributeError):
            return None
        handle = ctypes.c_void_p()
        # What Booster.predict(x, num_threads=1) predicts: normal output, from the first iteration to the best.
        status = init(booster._handle, ctypes.c_int(_PREDICT_NORMAL), ctypes.c_int(0),
                      ctypes.c_int(booster.best_iteration), ctypes.c_int(_DTYPE_FLOAT64), ctypes.c_int32(width),
                      ctypes.c_char_p(b"num_threads=1"), ctypes.byref(handle))
        return cls(booster, handle, lib) if status == 0 else None

    def reader(self, row: np.ndarray) -> Callable[[], float]:
        """A call that predicts whatever `row` (width,) holds when it is made. LightGBM locks the booster
        around each prediction; the output is the reader's own, so readers may run in several threads."""
        if row.dtype != np.float64 or not row.flags.c_contiguous:
            raise ValueError("a single-row prediction reads a contiguous float64 row")
        from lightgbm.basic import _safe_call

        predict, handle, address = self._lib.LGBM_BoosterPredictForMatSingleRowFast, self._handle, row.ctypes.data
        pointer = ctypes.c_void_p(address)
        out, length = ctypes.c_double(), ctypes.c_int64()
        out_ref, length_ref = ctypes.byref(out), ctypes.byref(length)

        def read(row: np.ndarray = row) -> float:  # holds the row while the reader lives
            status = predict(handle, pointer, length_ref, out_ref)
            if status:
                _safe_call(status)  # raises LightGBM's error
            return out.value

        return read

    def __del__(self) -> None:
        self._lib.LGBM_FastConfigFree(self._handle)


def single_row(predictor: SingleRowConfig | lgb.Booster, row: np.ndarray) -> Callable[[], float]:
    """A call predicting whatever `row` (width,) holds when it is made, through the fast path when there is one."""
    if isinstance(predictor, SingleRowConfig):
        return predictor.reader(row)
    rows = row[None, :]
    return lambda: predictor.predict(rows, num_threads=1)[0]


class SingleRowPaths:
    """The single-row path of each of a model's boosters, made on first use (the booster itself where LightGBM
    has none). They point into this process's boosters, so a pickled model carries the boosters alone and
    makes its paths again where it is loaded (a Dask worker, say)."""

    def __init__(self, boosters: Sequence[lgb.Booster], width: int):
        self._boosters = list(boosters)
        self._width = width
        self._made: list[SingleRowConfig | lgb.Booster] | None = None
        self._lock = threading.Lock()
        self._local = threading.local()  # each thread's row and readers (row_readers)

    def get(self) -> list[SingleRowConfig | lgb.Booster]:
        made = self._made
        if made is None:
            with self._lock:
                if self._made is None:
                    self._made = [SingleRowConfig.made(b, self._width) or b for b in self._boosters]
                made = self._made
        return made

    def row_readers(self) -> tuple[np.ndarray, list[Callable[[], float]]]:
        """This thread's feature row (width,) and a reader of it for each booster, made on the thread's first
        forecast: a forecast writes each step's row in place and calls that step's reader. Making the readers
        took a twentieth of a cold forecast of one window; a thread runs one forecast at a time."""
        made = getattr(self._local, "made", None)
        if made is None:
            row = np.empty(self._width, dtype=np.float64)
            made = self._local.made = (row, [single_row(predictor, row) for predictor in self.get()])
        return made

    def __getstate__(self) -> dict:
        return {"boosters": self._boosters, "width": self._width}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["boosters"], state["width"])
