"""The ``air`` preset: the released AIR photo->sketch run (adaptation.sh; METHODS.md 5.2)."""

from __future__ import annotations


def air_preset(**_ignored) -> dict:
    """Recipe dict for the published AIR defaults.

    Base: NADA's directional loss with the AIR template rule (``clip.text_aggregate = "air"``), ViT-B/32 only
    (``ViT-B-32-quickgelu``: the OpenAI weights were trained with QuickGELU),
    NADA layer selection with k = 18 and the NADA slot map, EMA 0.99; batch 2, lr 0.002, 301 steps.
    AIR: t_int 30, t_thresh 150, w1 = w2 = 1, 4 context tokens from "a photo of a", 200 prompt steps at lr 1e-3,
    1000 fixed latents at psi 0.7. ``batch_prompt`` is 1 instead of the released 5 (identical copies get identical
    gradients; see zsgm_air.prompt). For the 201-step human->baby setup use steps 201, t_int 20, t_thresh 100.
    """
    return {
        "source": "photo",
        "target": "sketch",
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
            {"use": "air", "weight": 1.0, "t_int": 30, "t_thresh": 150, "n_ctx": 4, "ctx_init": "a photo of a",
             "prompt_align_iter": 200, "prompt_lr": 1e-3, "batch_prompt": 1, "n_latents": 1000,
             "latent_truncation": 0.7},
        ],
    }
