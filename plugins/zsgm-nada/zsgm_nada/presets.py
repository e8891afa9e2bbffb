"""The ``nada`` preset: the README paper-style run of StyleGAN-NADA (METHODS.md 2.3)."""

from __future__ import annotations


def nada_preset(**_ignored) -> dict:
    """Recipe dict for the public paper-style defaults.

    Size-independent settings only: the generator and the target come from the user (``--target``, or style
    images with an ``image-target`` technique); there is no default target, so a forgotten ``--target`` is
    refused instead of silently training photo -> sketch. The source stays "photo": it describes the pretrained
    generators the preset is meant for (photographs of faces, cars, churches, ...) and is what the paper's and
    the released code's example commands use; ``--source`` changes it. ``slot_map = "nada"`` reproduces the
    released code's slot-to-layer list (a known offset; see METHODS.md 2.5).
    """
    return {
        "source": "photo",
        "clip": {
            "models": [
                {"name": "ViT-B-32-quickgelu", "pretrained": "openai", "weight": 1.0},
                {"name": "ViT-B-16-quickgelu", "pretrained": "openai", "weight": 1.0},
            ],
            "preprocess": "nada",
            "text_aggregate": "nada",
        },
        "optim": {"steps": 301, "batch_size": 2, "lr": 0.002, "mixing": 0.0},
        "generator": {"sample_truncation": 0.7},
        "techniques": [
            {"use": "directional"},
            {"use": "layer-freeze", "k": 18, "auto_layer_iters": 1, "auto_layer_batch": 8, "slot_map": "nada"},
        ],
    }
