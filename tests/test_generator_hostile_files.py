"""Files that lie about their architecture, hold non-finite weights or are not generators at all.

Every case must end in one :class:`CheckpointError` naming the file and the key, and none may allocate a generator
before the file's architecture has been bounded and checked against its tensors: the tests replace the
``Generator`` class the loader builds with one that fails the test if it is ever constructed.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from zsgm.generator import CheckpointError, Generator, GeneratorArch, export_rosinality, load_generator, save_generator


def small():
    torch.manual_seed(0)
    g = Generator(GeneratorArch.rosinality(16, style_dim=32, n_mlp=2, channel_multiplier=1, channel_max=16))
    g.latent_avg = torch.randn(32)
    return g


@pytest.fixture
def no_allocation(monkeypatch):
    """Fail the test if the loader builds a generator."""
    import zsgm.generator.checkpoints as checkpoints

    def never(arch):
        raise AssertionError(f"a generator was allocated ({arch}) for a file that should have been refused")

    monkeypatch.setattr(checkpoints, "Generator", never)


def write_safetensors(path, tensors, arch_meta):
    from safetensors.torch import save_file

    meta = {"format": "zsgm-generator", "version": "1", "arch": arch_meta}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=meta)


def tensors_of(g):
    return {**g.state_dict(), "latent_avg": g.latent_avg}


# ------------------------------------------------------------------ the architecture is bounded and checked first


def test_state_shapes_are_the_generators_without_building_it():
    from zsgm.generator.layout import element_count, state_shapes

    for arch in (GeneratorArch.rosinality(16, style_dim=32, n_mlp=2, channel_multiplier=1, channel_max=16),
                 GeneratorArch.nvidia(64, style_dim=8, n_mlp=3, channel_base=512, channel_max=16),
                 GeneratorArch(size=4, style_dim=4, n_mlp=1, channels=[8])):
        built = Generator(arch).state_dict()
        assert list(state_shapes(arch)) == list(built)
        assert all(state_shapes(arch)[k] == tuple(v.shape) for k, v in built.items())
        assert element_count(arch) == sum(v.numel() for v in built.values())
    # OPS.md 3.4: rosinality Generator(1024, 512, 8, channel_multiplier=2) has 33,166,492 values with its buffers
    assert element_count(GeneratorArch.rosinality(1024)) == 33_166_492


HUGE_ARCHES = [
    # what the audit's 400 TB file asked for, and its relatives: each field past its bound, then the total
    ({"size": 1024, "style_dim": 512, "n_mlp": 8, "channels": [10 ** 7] * 9},
     r"channels\[0\] \(resolution 4\) must be from 1 to 4096, got 10000000"),
    ({"size": 1 << 20, "channels": [16] * 19}, r"size must be a power of two from 4 to 4096"),
    ({"size": 16, "style_dim": 1 << 30, "channels": [16, 16, 16]}, r"style_dim must be an integer from 1 to 4096"),
    ({"size": 16, "n_mlp": 10 ** 6, "channels": [16, 16, 16]}, r"n_mlp must be an integer from 1 to 64"),
    ({"size": 4096, "style_dim": 4096, "channels": [4096] * 11}, r"parameter and buffer values, above the limit"),
    ({"size": 16, "channels": [16.5, 16, 16]}, r"channels\[0\] \(resolution 4\) must be from 1 to 4096, got 16.5"),
    ({"size": 16, "channels": [16, 16, 16], "lr_mlp": float("nan")}, r"lr_mlp must be a finite positive number"),
    ({"size": 16, "channels": [16, 16, 16], "blur_kernel": [1, -1, 1, -1]}, r"blur_kernel taps must have a non-zero"),
]


@pytest.mark.parametrize("arch,message", HUGE_ARCHES, ids=[str(i) for i in range(len(HUGE_ARCHES))])
def test_safetensors_architecture_metadata_is_bounded(tmp_path, no_allocation, arch, message):
    path = tmp_path / "huge.safetensors"
    write_safetensors(path, tensors_of(small()), json.dumps(arch))
    with pytest.raises(CheckpointError, match=r"huge.safetensors: bad architecture in metadata key 'arch' \(.*"
                                              + message):
        load_generator(path)


def test_limits_leave_room_for_real_generators():
    from zsgm.generator.arch import MAX_ELEMENTS
    from zsgm.generator.layout import element_count

    assert element_count(GeneratorArch.nvidia(1024)) < MAX_ELEMENTS // 8
    GeneratorArch.nvidia(4096, style_dim=1024, channel_max=1024)  # accepted


def test_safetensors_metadata_is_checked_against_the_header_before_any_data_is_read(tmp_path, no_allocation,
                                                                                      monkeypatch):
    import safetensors.torch

    def no_data(*args, **kwargs):
        raise AssertionError("tensor data was read before the architecture was checked")

    monkeypatch.setattr(safetensors.torch, "load_file", no_data)
    tensors = tensors_of(small())
    cases = {
        # within the bounds, but not what the file holds
        "big.safetensors": (GeneratorArch.nvidia(1024).to_dict(),
                            r"big.safetensors: missing generator weights \['style.3.weight'.* \(96 in all\) for "
                            r"the 1024px generator of the architecture in metadata key 'arch'"),
        "wide.safetensors": (dict(small().arch.to_dict(), channels=[32, 32, 32]),
                             r"wide.safetensors: key 'input.input' has shape \[1, 16, 4, 4\], the architecture in "
                             r"metadata key 'arch' expects \[1, 32, 4, 4\]"),
        "avg.safetensors": (small().arch.to_dict(), r"avg.safetensors: latent_avg should have 32 values, found \[7\]"),
    }
    for name, (arch, message) in cases.items():
        write_safetensors(tmp_path / name, dict(tensors, latent_avg=torch.zeros(7)) if name == "avg.safetensors"
                          else tensors, json.dumps(arch))
        with pytest.raises(CheckpointError, match=message):
            load_generator(tmp_path / name)


BAD_METADATA = [
    ("not json", r"bad architecture in metadata key 'arch' \(Expecting value"),
    ("[16, 16]", r"bad architecture in metadata key 'arch' \(generator architecture should be a table"),
    ('{"size": 1e999, "channels": [16, 16, 16]}', r"size must be a power of two from 4 to 4096, got inf"),
    ("[" * 100_000 + "]" * 100_000, r"bad architecture in metadata key 'arch'"),
    ('{"size": 16, "channels": 16}', r"bad architecture in metadata key 'arch'"),
    (None, r"the metadata lacks key 'arch'"),
]


@pytest.mark.parametrize("meta,message", BAD_METADATA, ids=[str(i) for i in range(len(BAD_METADATA))])
def test_malformed_architecture_metadata_is_one_error(tmp_path, no_allocation, meta, message):
    from safetensors.torch import save_file

    path = tmp_path / "meta.safetensors"
    metadata = {"format": "zsgm-generator", "version": "1"}
    if meta is not None:
        metadata["arch"] = meta
    save_file({k: v.contiguous() for k, v in tensors_of(small()).items()}, str(path), metadata=metadata)
    with pytest.raises(CheckpointError, match=r"meta.safetensors: .*" + message):
        load_generator(path)


def test_torch_shapes_that_ask_for_a_huge_generator_are_refused(tmp_path, no_allocation):
    """A tiny .pt can claim any shape: a stride-0 view of one value pickles as a [2^20, 2^20] tensor."""
    g = small()
    cases = {
        "style.1.weight": (torch.zeros(1).expand(1 << 20, 1 << 20), r"key 'style.1.weight' gives style_dim 1048576"),
        "input.input": (torch.zeros(1).expand(1, 1 << 20, 4, 4), r"key 'input.input' gives channels 1048576"),
        "convs.0.conv.weight": (torch.zeros(1).expand(1, 1 << 20, 16, 3, 3),
                                r"key 'convs.0.conv.weight' gives channels 1048576"),
    }
    for key, (tensor, message) in cases.items():
        state = dict(g.state_dict(), **{key: tensor})
        torch.save({"g_ema": state}, tmp_path / "lie.pt")
        assert (tmp_path / "lie.pt").stat().st_size < 200_000
        with pytest.raises(CheckpointError, match=r"lie.pt \[g_ema\]: " + message + r", outside 1..4096"):
            load_generator(tmp_path / "lie.pt")
    # 65 mapping layers: past the bound on n_mlp, named by the last one
    state = dict(g.state_dict())
    for i in range(3, 66):
        state[f"style.{i}.weight"], state[f"style.{i}.bias"] = torch.zeros(32, 32), torch.zeros(32)
    torch.save({"g_ema": state}, tmp_path / "deep.pt")
    with pytest.raises(CheckpointError, match=r"deep.pt \[g_ema\]: key 'style.65.weight' gives mapping layers 65"):
        load_generator(tmp_path / "deep.pt")


# ------------------------------------------------------------------ non-finite weights


def test_non_finite_weights_are_refused_in_every_format(tmp_path):
    g = small()
    with torch.no_grad():
        g.conv1.conv.weight.fill_(float("nan"))
        g.to_rgbs[1].bias[0, 1] = float("inf")
    export_rosinality(g, tmp_path / "g.pt")
    save_generator(g, tmp_path / "g.safetensors")
    n = len(g.state_dict())
    for name in ("g.pt", "g.safetensors"):
        with pytest.raises(CheckpointError, match=rf"{name}: 2 of {n + 1} tensors hold non-finite values \(NaN or "
                                                  rf"inf\), the first is 'conv1.conv.weight' \(2304 of 2304 values\)"):
            load_generator(tmp_path / name)


def test_an_all_nan_checkpoint_and_a_nan_latent_avg_are_refused(tmp_path):
    g = small()
    with torch.no_grad():
        for t in [*g.state_dict().values(), g.latent_avg]:
            t.fill_(float("nan"))
    export_rosinality(g, tmp_path / "nan.pt")
    n = len(g.state_dict()) + 1
    with pytest.raises(CheckpointError, match=rf"nan.pt: {n} of {n} tensors hold non-finite values .* the first is "
                                              rf"'style.1.weight' \(1024 of 1024 values\)"):
        load_generator(tmp_path / "nan.pt")
    g = small()
    g.latent_avg[3] = float("-inf")
    export_rosinality(g, tmp_path / "avg.pt")
    with pytest.raises(CheckpointError, match=r"avg.pt: 1 of \d+ tensors .* the first is 'latent_avg' \(1 of 32"):
        load_generator(tmp_path / "avg.pt")


def test_non_finite_values_in_ignored_buffers_do_not_matter(tmp_path):
    g = small()
    state = dict(g.state_dict(), **{"noises.noise_99": torch.full((1, 1, 2, 2), float("nan"))})
    torch.save({"g_ema": state, "latent_avg": g.latent_avg}, tmp_path / "g.pt")
    loaded, info = load_generator(tmp_path / "g.pt")
    assert info["ignored_buffers"] == ["noises.noise_99"]


# ------------------------------------------------------------------ every failure: one CheckpointError naming the file


def test_other_bad_files_are_one_error_naming_the_file(tmp_path, no_allocation):
    from safetensors.torch import save_file

    with pytest.raises(CheckpointError, match=rf"{tmp_path.name}: a directory, not a checkpoint file"):
        load_generator(tmp_path)
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(CheckpointError, match=r"pipe: not a regular file"):
        load_generator(tmp_path / "pipe")
    with pytest.raises(CheckpointError, match=r"null: not a regular file"):
        load_generator("/dev/null")
    g = small()
    tensors = {k: v.contiguous() for k, v in tensors_of(g).items()}
    tensors["conv1.noise.weight"] = torch.zeros(1, dtype=torch.int64)
    save_file(tensors, str(tmp_path / "int.safetensors"),
              metadata={"format": "zsgm-generator", "version": "1", "arch": json.dumps(g.arch.to_dict())})
    with pytest.raises(CheckpointError, match=r"int.safetensors: key 'conv1.noise.weight' has dtype torch.int64, a "
                                              r"generator holds floating-point tensors only"):
        load_generator(tmp_path / "int.safetensors")


def test_the_cli_prints_one_line_for_hostile_files(tmp_path, capsys):
    from zsgm.cli import main

    g = small()
    write_safetensors(tmp_path / "huge.safetensors", tensors_of(g),
                      json.dumps({"size": 1024, "channels": [10 ** 7] * 9}))
    with torch.no_grad():
        g.conv1.conv.weight.fill_(float("nan"))
    export_rosinality(g, tmp_path / "nan.pt")
    for name in ("huge.safetensors", "nan.pt"):
        assert main(["convert", str(tmp_path / name), str(tmp_path / "out.pt")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and name in err and "Traceback" not in err
    assert not (tmp_path / "out.pt").exists()


# ------------------------------------------------------------------ the class, not only the listed cases


def _mutations(g, rng):
    """Random lies about a small generator's state, each with whether a loader must refuse it: wrong, empty or
    huge (stride-0) shapes, missing or extra keys (harmless only for the optional noise and kernel buffers),
    non-finite values."""
    def optional(key):  # OPS.md 3.1: noises.* and *.kernel buffers may be missing or extra
        return key.startswith("noises.") or key.endswith(".kernel")

    state = dict(g.state_dict())
    keys = sorted(state)
    shapes = [(), (0,), (1 << 20,), (1, 1 << 20, 4, 4), (1 << 20, 32), (32, 1 << 20), (1, 3, 1 << 20, 1, 1),
              (2, 2, 2, 2, 2, 2), (1, 16, 16, 3, 1)]
    for _ in range(60):
        lie = dict(state)
        key = rng.choice(keys)
        kind = rng.randrange(5)
        if kind == 0:
            lie[key] = torch.zeros(()).expand(rng.choice(shapes))  # any shape, one stored value
            refuse = True
        elif kind == 1:
            del lie[key]
            refuse = not optional(key)
        elif kind == 2:
            extra = f"{key.rsplit('.', 1)[0]}.{rng.choice(['weight', 'bias', 'kernel'])}_x"
            lie[extra] = torch.zeros(3)
            refuse = not optional(extra)
        elif kind == 3:
            lie[key] = torch.full(state[key].shape, rng.choice([float("nan"), float("inf"), -float("inf")]))
            refuse = True
        else:  # a consistent lie: every mapping layer claims a 2^20-wide style
            for i in (1, 2):
                lie[f"style.{i}.weight"] = torch.zeros(()).expand(1 << 20, 1 << 20)
                lie[f"style.{i}.bias"] = torch.zeros(()).expand(1 << 20)
            refuse = True
        yield key, lie, refuse


def test_random_lies_in_a_torch_file_end_in_checkpoint_errors(tmp_path, monkeypatch):
    """Whatever a .pt claims, loading ends in the small generator or in one CheckpointError naming the file."""
    import random

    import zsgm.generator.checkpoints as checkpoints

    real = checkpoints.Generator

    def bounded(arch):
        assert arch.size <= 16 and max(arch.channels) <= 16 and arch.style_dim <= 32, arch
        return real(arch)

    monkeypatch.setattr(checkpoints, "Generator", bounded)
    g = small()
    refused = 0
    for key, lie, refuse in _mutations(g, random.Random(0)):
        torch.save({"g_ema": lie, "latent_avg": g.latent_avg}, tmp_path / "lie.pt")
        try:
            load_generator(tmp_path / "lie.pt")
            assert not refuse, f"a lie about {key!r} was loaded"
        except CheckpointError as exc:
            assert refuse and "lie.pt" in str(exc) and "\n" not in str(exc), (key, exc)
            refused += 1
    assert refused > 40
