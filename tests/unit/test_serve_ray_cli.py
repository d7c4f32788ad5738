"""`qrank serve --ray` flags: parsed into the distributed settings, bad values refused before Ray starts."""

from __future__ import annotations

import pytest

from qrank.cli import build_parser, main
from qrank.cli.common import settings_from_args


def test_ray_flags_reach_the_settings():
    args = build_parser().parse_args(
        ["serve", "--ray", "--reranker", "m", "--replicas", "3", "--num-gpus-per-replica", "1", "--ray-address", "auto"]
    )
    s = settings_from_args(args)
    assert args.ray and s.distributed.replicas == 3 and s.distributed.num_gpus_per_replica == 1.0
    assert s.distributed.ray_address == "auto" and s.server.rerankers == ["m"]


def test_bad_autoscale_is_refused_before_anything_starts(capsys):
    assert main(["serve", "--ray", "--reranker", "m", "--autoscale", "two:four"]) == 2
    assert "autoscale" in capsys.readouterr().err


def test_autoscale_bounds_are_checked():
    pytest.importorskip("ray.serve", reason="needs the 'ray' extra")
    from qrank.distributed.ray_serve import build_app
    from qrank.errors import InvalidInput
    from qrank.settings import Settings

    with pytest.raises(InvalidInput) as err:
        build_app(Settings(server={"rerankers": ["m"]}, distributed={"autoscale_min": 5, "autoscale_max": 2}))
    assert err.value.field == "distributed.autoscale_min"
    with pytest.raises(InvalidInput) as err:
        build_app(Settings())
    assert err.value.field == "server.rerankers"
