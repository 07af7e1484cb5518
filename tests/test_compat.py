"""The differences between the two stacks (transformers 5 without Optimum, 4.57 with it), in one place."""

import pytest

from hf_compress.compat import TRANSFORMERS_MAJOR, training_argument_fields, training_arguments


def test_training_arguments_are_spelled_for_the_installed_transformers():
    recipe = {"warmup_ratio": 0.06, "group_by_length": True, "save_safetensors": True, "learning_rate": 3e-4}
    if TRANSFORMERS_MAJOR >= 5:  # warmup_ratio, group_by_length and save_safetensors are gone
        expected = {"warmup_steps": 0.06, "train_sampling_strategy": "group_by_length", "learning_rate": 3e-4}
    else:
        expected = recipe
    assert training_arguments(recipe) == expected
    assert set(training_arguments(recipe)) <= training_argument_fields()


def test_the_transformers_5_spellings_work_on_either_stack():
    given = {"warmup_steps": 0.1, "train_sampling_strategy": "group_by_length"}
    if TRANSFORMERS_MAJOR >= 5:
        assert training_arguments(given) == given
    else:  # a fractional warmup_steps is a ratio; the sampler is a flag
        assert training_arguments(given) == {"warmup_ratio": 0.1, "group_by_length": True}
    assert training_arguments({"warmup_steps": 100.0}) == {"warmup_steps": 100}  # a count stays a count
    assert training_arguments({"group_by_length": False}).get("train_sampling_strategy") is None


def test_warmup_given_twice_is_refused():
    with pytest.raises(ValueError, match="give warmup_ratio or warmup_steps, not both"):
        training_arguments({"warmup_ratio": 0.06, "warmup_steps": 0.1 if TRANSFORMERS_MAJOR < 5 else 10})
