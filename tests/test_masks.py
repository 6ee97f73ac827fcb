"""Masked editing through the real nodes: with a noise mask, only the masked part changes;
outside it the output is the input latent bit for bit, and a soft mask blends the two."""

import pytest
import torch

from harness.comfy import relative_error, run_node
from helpers import METHODS, common, invert, sample


def half_mask(batch=1):
    """1 on the left half of a 64x64 image (edit there), 0 on the right (keep)."""
    mask = torch.zeros(batch, 64, 64)
    mask[:, :, :32] = 1.0
    return mask


@pytest.mark.parametrize("method", METHODS)
def test_masked_edit_keeps_the_outside_bit_for_bit(comfy, scene, method):
    """With Set Latent Noise Mask before the Invert node, the edit changes only the masked
    left half; the right half of the result is the input latent exactly."""
    masked = run_node(comfy, "SetLatentNoiseMask", samples=scene["latent"], mask=half_mask())
    inverted = invert(comfy, scene, method, masked)
    assert "noise_mask" in inverted
    edited = sample(comfy, scene, method, inverted, positive="edit")
    source = scene["latent"]["samples"]
    # 64 px -> 8 latent columns: columns 0-3 are inside the mask, 4-7 outside.
    assert torch.equal(edited["samples"][..., 4:], source[..., 4:])
    inside_change = relative_error(edited["samples"][..., :4], source[..., :4])
    print(f"\n[mask {method}] inside change {inside_change:.3f}, outside change 0 (bit-identical)")
    assert inside_change > 1e-2
    unmasked = sample(comfy, scene, method, dict((k, v) for k, v in inverted.items() if k != "noise_mask"),
                      positive="edit")
    assert torch.equal(edited["samples"][..., :4], unmasked["samples"][..., :4].float())


def test_mask_set_after_inversion_and_soft_masks(comfy, scene):
    """The mask may also be set on the inverted latent; a soft mask blends input and edit."""
    inverted = invert(comfy, scene, "EDICT")
    full = sample(comfy, scene, "EDICT", inverted, positive="edit")
    soft = run_node(comfy, "SetLatentNoiseMask", samples=inverted, mask=torch.full((1, 64, 64), 0.25))
    edited = sample(comfy, scene, "EDICT", soft, positive="edit")
    source = scene["latent"]["samples"].double()
    expected = source + 0.25 * (full["exact_inversion"]["branch"] - source)
    assert relative_error(edited["samples"], expected) <= 1e-6
    # The masked pair is still a pair: Latent Pair Mix mixes it, and EDICT Invert takes it
    # back exactly (sampling the re-inverted pair under the same mask blends once more).
    record = edited["exact_inversion"]
    mixed = run_node(comfy, "LatentPairMix", latent=edited, weight=0.5)
    assert torch.equal(mixed["samples"], (0.5 * record["branch"] + 0.5 * record["partner"]).float())
    again = sample(comfy, scene, "EDICT", invert(comfy, scene, "EDICT", edited, positive="edit"), positive="edit")
    blended_twice = source + 0.25 * (record["branch"] - source)
    assert relative_error(again["exact_inversion"]["branch"], blended_twice) <= 1e-10


def test_masked_text_to_image_keeps_the_unmasked_latent(comfy, scene):
    masked = run_node(comfy, "SetLatentNoiseMask", samples=scene["latent"], mask=half_mask())
    out = run_node(comfy, "BDIASample", latent_image=masked, seed=3, gamma=0.5,
                   **common(comfy, scene, denoise=1.0))
    assert torch.equal(out["samples"][..., 4:], scene["latent"]["samples"][..., 4:])
    assert not torch.equal(out["samples"][..., :4], scene["latent"]["samples"][..., :4])
