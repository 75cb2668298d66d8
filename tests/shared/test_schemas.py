import pytest
from hypothesis import given, strategies as st

from pocketrank.shared.errors import PocketrankError, ValidationError
from pocketrank.shared.schemas import MAX_ITEM_ID, check_item_id, check_item_index, validate_event, validate_item

GOOD = {"event_id": "e1", "user_id": "u1", "device_id": "d1", "type": "click", "item_id": 7,
        "timestamp": 1_700_000_000, "session_id": "s1"}


def test_a_valid_event_round_trips():
    ev = validate_event(GOOD)
    assert ev.item_id == "7" and ev.type == "click"  # the product's own id: an integer becomes its digits
    assert validate_event(ev.to_dict()) == ev


@pytest.mark.parametrize("change, field", [
    ({"type": "like"}, "type"),
    ({"item_id": None}, "item_id"),
    ({"item_id": 0}, "item_id"),
    ({"item_id": 2**31}, "item_id"),
    ({"item_id": True}, "item_id"),
    ({"item_id": ""}, "item_id"),
    ({"item_id": 7.0}, "item_id"),
    ({"item_id": ["7"]}, "item_id"),
    ({"user_id": "has space"}, "user_id"),
    ({"user_id": "x" * 65}, "user_id"),
    ({"event_id": None}, "event_id"),
    ({"timestamp": float("nan")}, "timestamp"),
    ({"timestamp": "yesterday"}, "timestamp"),
    ({"timestamp": -1}, "timestamp"),
    ({"query": "shoes"}, "query"),
    ({"colour": "red"}, "colour"),
])
def test_validation_names_the_bad_field(change, field):
    obj = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    with pytest.raises(ValidationError) as err:
        validate_event(obj)
    assert err.value.field == field


def test_search_needs_a_query_and_not_an_item():
    ev = validate_event({**{k: v for k, v in GOOD.items() if k != "item_id"}, "type": "search", "query": " red shoes "})
    assert ev.query == "red shoes" and ev.item_id is None
    with pytest.raises(ValidationError, match="query"):
        validate_event({**GOOD, "type": "search"})


def test_missing_timestamp_is_named():
    obj = dict(GOOD)
    del obj["timestamp"]
    with pytest.raises(ValidationError) as err:
        validate_event(obj)
    assert err.value.field == "timestamp"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=10,
)


@given(st.dictionaries(st.sampled_from(sorted(GOOD) + ["query", "x"]), json_values, max_size=9) | json_values)
def test_any_json_is_either_an_event_or_a_validation_error(obj):
    try:
        ev = validate_event(obj)
    except ValidationError as exc:
        assert exc.field and exc.message  # any other exception type fails the test
    else:
        assert validate_event(ev.to_dict()) == ev


def test_items_validate_too():
    item = validate_item({"item_id": 3, "title": "Lamp", "category": "Home", "price": 9.5})
    assert item.in_stock and item.categories == ("Home",)
    assert (item.item_id, item.sku, item.external_id) == (0, "3", "3")  # the store assigns the index
    lamp = validate_item({"item_id": "Lampe « Nuit »", "title": "Lamp", "category": "Home"})
    assert lamp.external_id == "Lampe « Nuit »" and lamp.to_dict()["item_id"] == "Lampe « Nuit »"
    with pytest.raises(ValidationError) as err:
        validate_item({"item_id": 3, "title": "Lamp", "category": "Home", "price": -1})
    assert err.value.field == "price"


def test_one_hierarchy():
    assert issubclass(ValidationError, PocketrankError)


@pytest.mark.parametrize("item_id", [" 12", "12\n", "12 ", "\u00a0x", "a\tb", "a\x00b", "\x7f", "x" * 65])
def test_product_ids_are_printable_text_without_surrounding_spaces(item_id):
    with pytest.raises(ValidationError) as err:
        validate_event({**GOOD, "item_id": item_id})
    assert err.value.field == "item_id"


@pytest.mark.parametrize("item_id", ["Toy Story (1995)", "café-crème ☕", "²", "١٢٣", "SKU/00-42:blue", "x" * 64,
                                     "0042", "𝄞 clef"])
def test_a_product_id_is_the_marketplace_s_own_string_kept_as_given(item_id):
    ev = validate_event({**GOOD, "item_id": item_id})
    assert ev.item_id == item_id  # never turned into an integer: "0042" is not "42"
    assert validate_event(ev.to_dict()) == ev


def test_an_integer_product_id_is_its_decimal_digits():
    assert check_item_id(42) == "42" and check_item_id(MAX_ITEM_ID) == str(MAX_ITEM_ID)
    for bad in (0, -1, MAX_ITEM_ID + 1, True, 4.2, None):
        with pytest.raises(ValidationError):
            check_item_id(bad)
    with pytest.raises(ValidationError) as err:
        check_item_id(" x", "external_id")
    assert err.value.field == "external_id"


def test_an_item_index_is_a_positive_int32():
    assert check_item_index(7) == 7 and check_item_index("7") == 7
    for bad in (0, 2**31, "²", "7a", True, 7.0, "Toy Story"):
        with pytest.raises(ValidationError):
            check_item_index(bad)


def test_a_search_may_name_a_product_by_its_string_id():
    ev = validate_event({**GOOD, "type": "search", "query": "toy", "item_id": "Toy Story (1995)"})
    assert ev.item_id == "Toy Story (1995)" and ev.query == "toy"


def test_ids_cannot_end_in_a_newline():
    with pytest.raises(ValidationError) as err:
        validate_event({**GOOD, "user_id": "abc\n"})
    assert err.value.field == "user_id"


def test_an_event_without_a_session_round_trips():
    ev = validate_event({k: v for k, v in GOOD.items() if k != "session_id"})
    assert "session_id" not in ev.to_dict()
    assert validate_event(ev.to_dict()) == ev


def test_context_is_validated_and_round_trips():
    ev = validate_event({**GOOD, "context": {"source": "edge", "model_version": "m1", "connectivity": "offline"}})
    assert dict(ev.context) == {"source": "edge", "model_version": "m1", "connectivity": "offline"}
    assert validate_event(ev.to_dict()) == ev
    for bad, field in (({"colour": "x"}, "context.colour"), ({"source": "tv"}, "context.source"),
                       ({"platform": ""}, "context.platform"), ("edge", "context")):
        with pytest.raises(ValidationError) as err:
            validate_event({**GOOD, "context": bad})
        assert err.value.field == field


def test_on_the_wire_a_number_without_a_fraction_is_an_integer():
    """JSON Schema's integer (and all a JavaScript client can write): 7.0 is 7 in a request; a Python
    caller's float stays a float, which no product id or year is."""
    ev = validate_event({**GOOD, "item_id": 7.0}, wire=True)
    assert ev.item_id == "7"
    assert validate_item({"item_id": "p", "title": "Lamp", "category": "Home", "year": 1999.0, "stock": 2.0},
                         wire=True).year == 1999
    for wire in (True, False):
        with pytest.raises(ValidationError) as err:
            validate_event({**GOOD, "item_id": 7.5}, wire=wire)
        assert err.value.message == "must be a string (the product's own id)"
    with pytest.raises(ValidationError):
        validate_event({**GOOD, "item_id": 7.0})


def test_on_the_wire_ids_are_strings():
    assert validate_event({**GOOD, "user_id": 196}).user_id == "196"  # a Python caller's convenience
    with pytest.raises(ValidationError) as err:
        validate_event({**GOOD, "user_id": 196}, wire=True)
    assert (err.value.field, err.value.message) == ("user_id", "must be a string")
