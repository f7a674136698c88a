"""LinearSchedule (run/schedules.py) by hand: DQN's and the tabular methods' epsilon, the 'linear'
learning rate of PPO and A2C and PPO's 'linear' clip range."""

import pytest

from rlfoundry.run.schedules import LinearSchedule


@pytest.mark.parametrize(
    ("step", "value"),
    [(-5, 1.0), (0, 1.0), (1, 0.875), (4, 0.5), (8, 0.0), (9, 0.0), (1000, 0.0)],
)
def test_linear_schedule_goes_from_start_to_end_then_stays(step, value):
    # start 1, end 0 over 8 steps: 1/8 per step (exact in binary). Before step 0 it holds the start,
    # from step 8 on the end, never beyond either.
    assert LinearSchedule(1.0, 0.0, 8)(step) == value


def test_linear_schedule_rises_as_well_as_falls():
    assert [LinearSchedule(0.25, 1.0, 3)(step) for step in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]


def test_a_schedule_of_no_duration_is_its_end_value():
    # epsilon_decay_steps = 0: no decay at all, and no division by zero.
    assert LinearSchedule(1.0, 0.05, 0)(0) == 0.05
    assert LinearSchedule(1.0, 0.05, 0)(7) == 0.05
