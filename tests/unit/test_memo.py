from llmlabel.llm.memo import Memo


def test_memo_is_bounded_and_drops_the_oldest_entry():
    m: Memo[str, int] = Memo(2)
    m.put("a", 1)
    m.put("b", 2)
    m.put("c", 3)
    assert len(m) == 2 and "a" not in m and m.get("b") == 2 and m.get("c") == 3
    assert m.get("a") is None and m.get("a", -1) == -1
    for i in range(100):
        m.put(f"k{i}", i)
    assert len(m) == 2 and set(m) == {"k98", "k99"}


def test_get_or_make_makes_once_and_remembers_none():
    m: Memo[str, int | None] = Memo(4)
    made = []
    for _ in range(3):
        assert m.get_or_make("k", lambda: made.append(1)) is None
    assert made == [1]


def test_size_zero_remembers_nothing():
    m: Memo[str, int] = Memo(0)
    assert m.put("a", 1) == 1 and len(m) == 0 and m.get("a") is None
