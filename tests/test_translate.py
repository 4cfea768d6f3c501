"""Translate stage: edit modes and batching of edits through one backend call."""

from __future__ import annotations

import pytest
import torch

from starcli.translate import edit_crops


def _biased_generator(calls: list[int]):
    """A fake generator with a reconstruction error (+0.1 everywhere) that brightens the first
    8 rows when label 0 is on."""

    def translate(crops: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        calls.append(len(crops))
        out = crops + 0.1
        out[labels[:, 0] > 0.5, :, :8] += 0.3
        return out.clamp(0, 1)

    return translate


def test_difference_mode_cancels_reconstruction_error_outside_the_edit():
    crops = torch.full((3, 3, 16, 16), 0.4)
    source = torch.zeros(3, 2)
    target = torch.tensor([[1.0, 0.0]] * 3)
    calls: list[int] = []
    direct = edit_crops(_biased_generator(calls), crops, source, [target], "direct")[0]
    difference = edit_crops(_biased_generator(calls), crops, source, [target], "difference")[0]
    assert calls == [3, 6], "each mode makes one batched call (difference adds the source pass)"
    torch.testing.assert_close(direct[:, :, 8:], torch.full_like(direct[:, :, 8:], 0.5))
    torch.testing.assert_close(difference[:, :, 8:], crops[:, :, 8:])  # untouched outside the edit
    torch.testing.assert_close(difference[:, :, :8], torch.full_like(difference[:, :, :8], 0.7))


def test_several_edits_share_one_call_and_keep_order():
    crops = torch.rand(2, 3, 8, 8)
    calls: list[int] = []
    outs = edit_crops(_biased_generator(calls), crops, torch.zeros(2, 2), [torch.zeros(2, 2), torch.ones(2, 2)], "difference")
    assert calls == [6] and len(outs) == 2
    torch.testing.assert_close(outs[0], crops)


def test_unknown_mode_and_empty_batch():
    with pytest.raises(ValueError, match="direct, difference"):
        edit_crops(lambda c, l: c, torch.rand(1, 3, 4, 4), torch.zeros(1, 1), [torch.ones(1, 1)], "magic")
    assert edit_crops(lambda c, l: c, torch.rand(0, 3, 4, 4), torch.zeros(0, 1), [torch.ones(0, 1)])[0].shape == (0, 3, 4, 4)
