"""The contract every registered technique keeps (each gets these tests by being registered): the packaged suite,
:mod:`hf_compress.testing.contract` (what ``hf-compress test-technique NAME`` runs on a plugin's technique), here on
every registered technique; the "two processes agree" part is ``test_distributed.py``. Technique-specific
behaviour, with exact numbers, is in each technique's own test file.
"""

from hf_compress.testing.contract import (  # noqa: F401  (pytest collects the tests and fixtures imported here)
    contract_tokenizer,
    full_run,
    pytest_generate_tests,
    test_every_checkpoint_loads,
    test_export_agrees_with_pytorch,
    test_recipe_block_round_trips,
    test_resume_mid_schedule_equals_the_uninterrupted_run,
    test_runs_under_the_plain_trainer,
)
