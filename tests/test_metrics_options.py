"""Metric options read as integers (zsgm.metrics.common.int_option): a bad value is one MetricError line naming
``metric.key`` and the value, before any weight file is looked for."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from zsgm.metrics.api import EvalContext, MetricError
from zsgm.metrics.common import int_option
from zsgm.metrics.fid import compute_fid, compute_kid
from zsgm.metrics.identity import compute_identity
from zsgm.metrics.intra_lpips import compute_intra_lpips
from zsgm.metrics.library import intra_lpips_applies
from zsgm.metrics.sifid import compute_sifid


def test_int_option_reads_ints_and_refuses_the_rest_in_one_line():
    ctx = EvalContext(generated=torch.zeros(2, 3, 8, 8), options={"m": {"a": 3, "b": "7", "c": 2.0, "z": 0,
                                                                        "s": "abc", "t": True, "f": 1.5, "n": -4}})
    assert (int_option(ctx, "m", "a", 1), int_option(ctx, "m", "b", 1), int_option(ctx, "m", "c", 1)) == (3, 7, 2)
    assert int_option(ctx, "m", "missing", 5) == 5 and int_option(ctx, "m", "missing", None) is None
    assert int_option(ctx, "m", "z", 1, minimum=0) == 0 and int_option(ctx, "m", "n", 1, minimum=None) == -4
    for key, message in (("z", "option m.z must be at least 1; got 0"),
                         ("s", "option m.s must be an integer; got 'abc'"),
                         ("t", "option m.t must be an integer; got True"),
                         ("f", "option m.f must be an integer; got 1.5")):
        with pytest.raises(MetricError) as err:
            int_option(ctx, "m", key, 1)
        assert str(err.value) == message


@pytest.mark.parametrize("metric, key, value, message", [
    ("intra-lpips", "size", 0, "option intra-lpips.size must be at least 1; got 0"),
    ("intra-lpips", "block", 0, "option intra-lpips.block must be at least 1; got 0"),
    ("intra-lpips", "k", "abc", "option intra-lpips.k must be an integer; got 'abc'"),
    ("fid", "batch_size", 0, "option fid.batch_size must be at least 1; got 0"),
    ("kid", "batch_size", 0, "option kid.batch_size must be at least 1; got 0"),
    ("kid", "kid_subsets", 0, "option kid.kid_subsets must be at least 1; got 0"),
    ("sifid", "batch_size", 0, "option sifid.batch_size must be at least 1; got 0"),
    ("identity", "batch_size", 0, "option identity.batch_size must be at least 1; got 0"),
])
def test_bad_integer_options_of_each_metric_are_one_line(metric, key, value, message, tmp_path):
    (tmp_path / "real").mkdir()
    for i in range(2):
        Image.new("RGB", (8, 8), (i * 90, 20, 30)).save(tmp_path / "real" / f"{i}.png")
    Image.new("RGB", (8, 8), (9, 9, 9)).save(tmp_path / "ref.png")
    x = torch.zeros(10, 3, 8, 8)
    ctx = EvalContext(generated=x, source=x, real_dir=tmp_path / "real", target_images=[tmp_path / "ref.png"],
                      options={metric: {key: value}},
                      weights={"inception": str(tmp_path / "none.pth"), "arcface": str(tmp_path / "none.pth")})
    compute = {"intra-lpips": compute_intra_lpips, "fid": compute_fid, "kid": compute_kid, "sifid": compute_sifid,
               "identity": compute_identity}[metric]
    with pytest.raises(MetricError) as err:
        compute(ctx)
    assert str(err.value) == message
    if (metric, key) == ("intra-lpips", "k"):
        with pytest.raises(MetricError, match="^option intra-lpips.k must be an integer; got 'abc'$"):
            intra_lpips_applies(ctx)
