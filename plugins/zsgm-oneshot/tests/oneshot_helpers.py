"""Recipe builders of the one-shot tests (imported by the test modules)."""

from __future__ import annotations


def tiny_recipe(reference: str, techniques: list[dict], *, steps: int = 3, **extra) -> dict:
    """A recipe dict on the tiny-random generator and CLIP, the LPIPS stand-in, short everything."""
    data = {
        "source": "photo", "target_images": [reference],
        "generator": {"checkpoint": "tiny-random"},
        "clip": {"models": [{"name": "tiny-random"}], "preprocess": "oneshot"},
        "optim": {"steps": steps, "batch_size": 2, "lr": 0.002, "mixing": 0.9, "ema_decay": 0.99},
        "run": {"sample_every": 0, "checkpoint_every": 1, "n_samples": 2, "progress": False},
        "techniques": techniques,
    }
    data.update(extra)
    return data


def search_entry(**options) -> dict:
    return {"use": "reference-search", "iterations": 2, "lpips": "standin", "mean_samples": 64, "views": 2,
            **options}


def oneshot_techniques(*, ref_freq: int = 2, d_reg_every: int = 2) -> list[dict]:
    """Every one-shot technique, sized for seconds-long runs."""
    return [
        search_entry(),
        {"use": "frozen-layers"},
        {"use": "reference-reconstruction", "ref_freq": ref_freq, "lpips": "standin"},
        {"use": "adversarial", "d_reg_every": d_reg_every},
        {"use": "clip-consistency", "weight": 10.0},
        {"use": "patch-contrastive", "n_crops": 3},
    ]
