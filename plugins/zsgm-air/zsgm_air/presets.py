"""The ``air`` preset: the released AIR photo->sketch run (adaptation.sh; METHODS.md 5.2)."""

from __future__ import annotations


def air_preset(**_ignored) -> dict:
    """Recipe dict for the published AIR defaults; the user gives the target text (``--target``).

    No default target: a preset that silently trained photo -> sketch when ``--target`` was forgotten would
    surprise. The source stays "photo", the text of the released FFHQ runs this preset reproduces (k = 18 is the
    1024 px FFHQ generator's slot count); ``--source`` replaces it for other generators.

    Base: NADA's directional loss with the AIR template rule (``clip.text_aggregate = "air"``), ViT-B/32 only
    (``ViT-B-32-quickgelu``: the OpenAI weights were trained with QuickGELU),
    NADA layer selection with k = 18 and the NADA slot map, EMA 0.99; batch 2, lr 0.002, 301 steps.
    AIR: refreshes from ``t_thresh_frac = 0.5`` of the run every ``t_int_frac = 0.1`` of it (of ``steps - 1``,
    the released loop's update count: 150 and 30 at 301 steps, 100 and 20 at 201), no update at step 0 (as the
    released loop), w1 = w2 = 1, 4 context tokens from "a photo of a", 200 prompt steps at lr 1e-3,
    1000 fixed latents at psi 0.7. ``batch_prompt`` is 1 instead of the released 5 (identical copies get identical
    gradients; see zsgm_air.prompt). For the 201-step human->baby setup set only ``optim.steps = 201``.
    """
    return {
        "source": "photo",
        "clip": {
            "models": [{"name": "ViT-B-32-quickgelu", "pretrained": "openai", "weight": 1.0}],
            "preprocess": "nada",
            "text_aggregate": "air",
        },
        "optim": {"steps": 301, "batch_size": 2, "lr": 0.002, "mixing": 0.0, "ema_decay": 0.99},
        "generator": {"sample_truncation": 0.7},
        "techniques": [
            {"use": "directional", "weight": 1.0},
            {"use": "layer-freeze", "k": 18, "auto_layer_iters": 1, "auto_layer_batch": 8, "slot_map": "nada"},
            {"use": "air", "weight": 1.0, "t_thresh_frac": 0.5, "t_int_frac": 0.1, "update_at_step_0": False,
             "n_ctx": 4, "ctx_init": "a photo of a",
             "prompt_align_iter": 200, "prompt_lr": 1e-3, "batch_prompt": 1, "n_latents": 1000,
             "latent_truncation": 0.7},
        ],
    }
