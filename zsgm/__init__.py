"""zsgm: CLIP-guided zero-shot and one-shot adaptation of pretrained StyleGAN2 generators.

Python API (imports are lazy; importing ``zsgm`` does nothing else)::

    from zsgm.recipe import recipe_from_dict, load_recipe
    from zsgm.loop import adapt

    recipe = load_recipe("examples/recipes/shapes-sketch.toml")
    result = adapt(recipe, out_dir="runs/sketch")
"""

__version__ = "0.1.0"
