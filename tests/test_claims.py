"""Tests of gmbook.claims, the guard of run-dependent sentences (README, "Contributing")."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gmbook.claims import ClaimError, checked, claim, clearly_less, within_noise


def test_claim_passes_silently_and_is_recorded():
    claim("the flow is closer than the EBM", 0.1 < 0.3, flow=0.1, ebm=0.3)
    assert checked()[-1] == "the flow is closer than the EBM"


def test_claim_failure_quotes_sentence_and_evidence():
    with pytest.raises(ClaimError) as err:
        claim("the flow is closer than the EBM", 0.4 < 0.3, flow=0.4, ebm=0.3)
    message = str(err.value)
    assert '"the flow is closer than the EBM"' in message
    assert "flow=0.4" in message and "ebm=0.3" in message
    assert isinstance(err.value, AssertionError)


@pytest.mark.parametrize("holds, ok", [(torch.tensor(True), True), (torch.tensor([False]), False),
                                        (np.bool_(True), True), (np.float64(0.0), False)])
def test_claim_accepts_tensor_and_numpy_truth_values(holds, ok):
    if ok:
        claim("a true sentence", holds)
    else:
        with pytest.raises(ClaimError):
            claim("a false sentence", holds)


@pytest.mark.parametrize("sentence, holds, exc", [
    (3, True, TypeError), ("word", True, ValueError), ("two words", None, TypeError),
    ("two words", torch.tensor([True, False]), ValueError),
    ("two words", np.array([True, True]), ValueError)])
def test_claim_rejects_bad_input(sentence, holds, exc):
    with pytest.raises(exc):
        claim(sentence, holds)


def test_clearly_less_and_within_noise_at_their_boundaries():
    # gap 1.0 against 2 standard errors of 0.4 (0.8) and of 0.6 (1.2)
    assert clearly_less(1.0, 2.0, 0.4) and not clearly_less(1.0, 2.0, 0.6)
    assert not clearly_less(2.0, 1.0, 0.0)          # the wrong order is never "less"
    assert within_noise(1.0, 2.0, 0.6) and not within_noise(1.0, 2.0, 0.4)
    assert within_noise(2.0, 1.0, 0.6)              # symmetric
    assert clearly_less(torch.tensor(1.0), 2.0, 0.1, z=3.0)
    with pytest.raises(ValueError):
        clearly_less(1.0, 2.0, -0.1)
    with pytest.raises(ValueError):
        within_noise(float("nan"), 2.0, 0.1)
    with pytest.raises(TypeError):
        within_noise("1", 2.0, 0.1)
