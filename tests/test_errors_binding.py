"""The engine's error kinds and the Python exception classes stay in step."""

from __future__ import annotations

import echelon
from echelon import _core, errors


def test_every_engine_error_kind_has_its_class_with_the_same_kind() -> None:
    kinds = _core.error_kinds()
    assert len(kinds) == len({k for k, _ in kinds}), "duplicate kinds"
    for kind, class_name in kinds:
        cls = getattr(errors, class_name)
        assert issubclass(cls, echelon.EchelonError), class_name
        assert cls.kind == kind, (class_name, cls.kind, kind)
        assert errors._class_for(kind) is cls
        assert class_name in echelon.__all__, f"{class_name} is not exported from echelon"


def test_the_kind_table_has_no_class_the_engine_cannot_raise() -> None:
    engine_kinds = {k for k, _ in _core.error_kinds()}
    assert set(errors._BY_KIND) == engine_kinds


def test_new_classes_sit_where_callers_catch_them() -> None:
    assert issubclass(echelon.QuotaExceeded, echelon.RateLimited)
    assert not echelon.QuotaExceeded.retryable
    assert issubclass(echelon.ModelNotFound, echelon.ProviderError)
    assert not issubclass(echelon.ModelNotFound, echelon.BadRequest), "a missing model is not the request's fault"
