"""The row driver's collector setting: raised while rows run, and given back as it was found."""

from __future__ import annotations

import gc

from llmlabel.pipeline.drive import _GC_THRESHOLD, _fewer_collections


def test_gc_threshold_is_raised_for_the_run_and_restored():
    old = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        with _fewer_collections():
            assert gc.get_threshold() == (_GC_THRESHOLD, 10, 10)
            with _fewer_collections():  # a nested run neither lowers it nor restores it
                assert gc.get_threshold()[0] == _GC_THRESHOLD
            assert gc.get_threshold()[0] == _GC_THRESHOLD
        assert gc.get_threshold() == (700, 10, 10)
        with _fewer_collections():
            gc.set_threshold(123, 4, 5)  # changed by someone else meanwhile: theirs stays
        assert gc.get_threshold() == (123, 4, 5)
        gc.set_threshold(50_000, 10, 10)
        with _fewer_collections():  # already higher: left alone
            assert gc.get_threshold()[0] == 50_000
        assert gc.get_threshold()[0] == 50_000
    finally:
        gc.set_threshold(*old)
