"""The ``oneclip`` preset: One-shot CLIP's released defaults (METHODS.md 6.4)."""

from __future__ import annotations

#: EMA decay of the released code: 0.5 ** (32 / 10000) ~ 0.99778.
ONECLIP_EMA = 0.5 ** (32 / (10 * 1000))

ONECLIP_DESCRIPTION = (
    "One-shot CLIP (Kwon & Ye) released defaults (give --reference IMAGE): 1,001-step reference search, then 2,001 "
    "steps, batch 2, mixing 0.9, lr 0.002 (G x4/5, D x16/17), EMA 0.99778, every 4th step a reference step "
    "(LPIPS + MSE + global D), otherwise adversarial (patch D) + 10 L_con + 1 L_patch; to_rgb layers frozen; "
    "B/32 with one-shot preprocessing. Generators of at most 64 px (the shapes world) get a scaled schedule that "
    "fits a few CPU minutes: 100 search iterations (w̄ from 2,000 samples), 401 steps, 4 crops of half the image "
    "side (a 1024-px run's 128-px crops would be 4 px there)"
)

#: Largest generator side that gets the small-generator schedule.
SMALL_GENERATOR_MAX_SIZE = 64
SMALL_SCHEDULE = {"steps": 401, "search_iterations": 100, "mean_samples": 2000, "n_crops": 4, "crop_frac": 0.5}


def oneclip_preset(generator_size: int | None = None, **_ignored) -> dict:
    """Recipe dict with the released argparse defaults (a sized preset: see ``generator_size``).

    Args:
        generator_size: the generator's side in pixels when known. At most ``SMALL_GENERATOR_MAX_SIZE`` the
            counts are scaled (``SMALL_SCHEDULE``): the published 1,001 + 2,001 steps take about half an hour on
            two CPU cores for the 32-px shapes generator, and a 128/1024 crop is 4 px there. The search starts
            from w̄ as released: the ``init = "best-of"`` start was measured on the shapes references and did
            not change their outcome (docs/SHAPES_BENCHMARK.md).

    The reference image is the user's (``--reference FILE``, i.e. ``target_images``): none is built in. The released
    code's quirks that change results are switched on as compatibility options: ``augment = "released"`` in the
    search (8 identical views, ColorJitter on [-1, 1] data), ``grouping = "released"`` for the patch negatives, and
    ``frozen_adam = "zero-grad"`` for the discriminator's Adam (the default). Noise is fresh per forward, as released.
    """
    data = {
        "source": "photo",
        "clip": {
            "models": [{"name": "ViT-B-32-quickgelu", "pretrained": "openai", "weight": 1.0}],
            "preprocess": "oneshot",
        },
        "optim": {"steps": 2001, "batch_size": 2, "lr": 0.002, "reg_ratio": 0.8, "beta1": 0.0, "beta2": 0.99,
                  "mixing": 0.9, "ema_decay": ONECLIP_EMA},
        "generator": {"sample_truncation": 0.7},
        "techniques": [
            {"use": "reference-search", "iterations": 1001, "lr": 0.01, "lambda_clip": 1.0, "lambda_l2": 0.01,
             "lambda_rec": 1.0, "views": 8, "augment": "released"},
            {"use": "frozen-layers", "modules": ["to_rgb1", "to_rgbs"]},
            {"use": "reference-reconstruction", "ref_freq": 4},
            {"use": "adversarial", "mode": "patch", "patch_levels": 1, "d_reg_every": 16, "r1": 10.0},
            {"use": "clip-consistency", "weight": 10.0},
            {"use": "patch-contrastive", "weight": 1.0, "crop_frac": 128 / 1024, "n_crops": 16, "tau": 1.0,
             "grouping": "released"},
        ],
    }
    if generator_size is not None and generator_size <= SMALL_GENERATOR_MAX_SIZE:
        small = SMALL_SCHEDULE
        data["optim"]["steps"] = small["steps"]
        for entry in data["techniques"]:
            if entry["use"] == "reference-search":
                entry.update(iterations=small["search_iterations"], mean_samples=small["mean_samples"])
            elif entry["use"] == "patch-contrastive":
                entry.update(n_crops=small["n_crops"], crop_frac=small["crop_frac"])
    return data
