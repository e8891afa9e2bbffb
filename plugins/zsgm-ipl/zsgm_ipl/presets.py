"""The ``ipl`` preset: IPL's public README command (METHODS.md 3.5)."""

from __future__ import annotations


def ipl_preset(**_ignored) -> dict:
    """Recipe dict for the published IPL defaults; the user gives the target text (``--target``).

    No default target: a preset that silently trained photo -> disney when ``--target`` was forgotten would
    surprise. The source stays "photo", the text of the README's FFHQ runs; ``--source`` replaces it.

    Stage 1: batch 32, Adam lr 0.05, 300 iterations, 4 context vectors, "a photo of a", lambda_l 1, lambda_src 0.
    Stage 2: batch 2, lr 0.002, 300 steps, ViT-B/32 only, EMA 0.99, NADA layer freezing every step with the
    released code's slot list. Nothing here depends on the generator's size: ``auto_layer_k`` makes the ipl
    technique set layer-freeze's k = int(2 * n_latent / 3) at setup (IPL's --auto_compute: 12 at 1024 px, 10 at
    512 px). ``stage2_hard_prompt = "classless"`` reproduces the released code's stage-2 fixed prompt
    (METHODS.md 3.7). The OpenAI weights need the QuickGELU config, hence ``ViT-B-32-quickgelu``.
    """
    return {
        "source": "photo",
        "clip": {
            "models": [{"name": "ViT-B-32-quickgelu", "pretrained": "openai", "weight": 1.0}],
            "preprocess": "nada",
            "text_aggregate": "nada",
        },
        "optim": {"steps": 300, "batch_size": 2, "lr": 0.002, "mixing": 0.0, "ema_decay": 0.99},
        "generator": {"sample_truncation": 0.7},
        "techniques": [
            {"use": "ipl", "batch_mapper": 32, "lr_mapper": 0.05, "iter_mapper": 300, "n_ctx": 4,
             "ctx_init": "a photo of a", "lambda_l": 1.0, "lambda_src": 0.0, "stage2_hard_prompt": "classless",
             "auto_layer_k": True},
            {"use": "directional"},
            {"use": "layer-freeze", "auto_layer_iters": 1, "auto_layer_batch": 8, "slot_map": "nada"},
        ],
    }
