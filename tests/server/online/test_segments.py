"""The cold-start prior: what the known users sharing a new user's attributes engaged with."""

from __future__ import annotations

from pocketrank.server.online import segments as seg


def test_each_attribute_segment_ranks_by_share_and_named_attributes_add_up():
    engaged = {"a": [1, 2], "b": [1, 3], "c": [2], "d": [3, 4], "e": [4]}
    profiles = {"a": {"gender": "F", "age_band": "18-24"}, "b": {"gender": "F", "age_band": "25-34"},
                "c": {"gender": "F", "age_band": "18-24"}, "d": {"gender": "M", "age_band": "25-34"},
                "e": {"gender": "M", "age_band": "18-24", "note": "ignored"}, "nobody": {"gender": "M"}}
    lists = seg.popular_lists(engaged, profiles, min_users=2)
    assert set(lists) == {"gender=F", "gender=M", "age_band=18-24", "age_band=25-34"}
    # F engaged 1 twice, 2 twice, 3 once: shares of 5 engagements, ties by product
    assert lists["gender=F"] == [(1, 0.4), (2, 0.4), (3, 0.2)]
    assert seg.popular_lists(engaged, profiles, min_users=4) == {}
    ranked, used = seg.lookup_popular(lists, {"gender": "M", "age_band": "18-24"})
    assert used == "age_band=18-24|gender=M"
    # 4: M 2/3 + 18-24 2/5; 2: 18-24 2/5; 3: M 1/3; 1: 18-24 1/5
    assert [i for i, _ in ranked] == [4, 2, 3, 1]
    assert seg.lookup_popular(lists, {"gender": "X"}) is None and seg.lookup_popular(lists, {}) is None
    assert seg.loads_popular(seg.dumps_popular(lists)) == lists
