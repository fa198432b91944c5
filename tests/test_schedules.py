import pytest

from dango_nb.schedules import (SCHEDULES, InteractionOnly, LinearUntilFlipped, LinearUntilUniform,
                                PaperTwoStage, PreThenPost, Schedule, get_schedule, register_schedule)

EPOCHS = [0, 10, 20, 30, 40, 50]


@pytest.mark.parametrize("cls, expected", [
    (PreThenPost, [1, 1, 1, 1, 0, 0]),
    (LinearUntilUniform, [1, 0.875, 0.75, 0.625, 0.5, 0.5]),
    (LinearUntilFlipped, [1, 0.75, 0.5, 0.25, 0, 0]),
    (InteractionOnly, [0, 0, 0, 0, 0, 0]),
])
def test_alpha_table_T40(cls, expected):
    s = cls(40)
    assert [s.alpha(e) for e in EPOCHS] == pytest.approx(expected, abs=1e-12)
    for e, a in zip(EPOCHS, expected):
        assert s.weights(e) == pytest.approx((a, 1 - a), abs=1e-12)


def test_paper_two_stage():
    s = PaperTwoStage(40)
    assert s.weights(0) == (1.0, 0.0) and s.weights(39) == (1.0, 0.0)
    assert s.weights(40) == (0.001, 1.0) and s.weights(100) == (0.001, 1.0)
    assert s.alpha(39) == 1.0 and s.alpha(40) == 0.001


def test_registry_and_get_schedule():
    for name in ["PreThenPost", "LinearUntilUniform", "LinearUntilFlipped", "PaperTwoStage", "InteractionOnly"]:
        assert name in SCHEDULES
        s = get_schedule(name, 7)
        assert isinstance(s, SCHEDULES[name]) and s.transition_epoch == 7 and s.name == name
    existing = PreThenPost(3)
    assert get_schedule(existing) is existing
    with pytest.raises(KeyError) as err:
        get_schedule("Linear", 10)
    assert "Linear" in str(err.value) and "PreThenPost" in str(err.value)


def test_user_defined_schedule_is_one_small_class():
    @register_schedule(name="_TestHalf")
    class Half(Schedule):
        def alpha(self, epoch):
            return 0.5

    try:
        s = get_schedule("_TestHalf", 5)
        assert s.weights(12) == (0.5, 0.5) and s.name == "_TestHalf"
        with pytest.raises(ValueError):  # the name is taken by another class
            register_schedule(type("Other", (Schedule,), {"alpha": lambda self, e: 0.0}), name="_TestHalf")
        with pytest.raises(TypeError):
            register_schedule(int)
    finally:
        SCHEDULES.pop("_TestHalf", None)


def test_bad_transition_epoch():
    with pytest.raises(ValueError):
        PreThenPost(-1)
    with pytest.raises(ValueError):
        PreThenPost(2.5)
