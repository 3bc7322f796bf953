"""Public ids: prefixed, time-sortable, validated by shape."""

from __future__ import annotations

from app.storage.ids import is_valid_id, new_id


def test_ids_sort_by_time() -> None:
    earlier = new_id("img", now_ms=1_700_000_000_000)
    later = new_id("img", now_ms=1_700_000_000_001)

    assert earlier < later
    assert is_valid_id(earlier, "img")
    assert not is_valid_id(earlier, "gen")
    assert not is_valid_id("img_short", "img")
