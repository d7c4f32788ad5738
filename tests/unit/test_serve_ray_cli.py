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


def test_a_deployment_the_cluster_cannot_place_is_refused():
    pytest.importorskip("ray.serve", reason="needs the 'ray' extra")
    from qrank.distributed.ray_serve import check_fits, required_resources
    from qrank.errors import InvalidInput
    from qrank.settings import Settings

    two = Settings(
        server={"rerankers": ["r"], "embedders": ["e"]}, distributed={"replicas": 2, "num_gpus_per_replica": 1}
    )
    assert required_resources(two) == {"CPU": 4.1, "GPU": 4.0}
    check_fits(two, {"CPU": 8.0, "GPU": 4.0})
    with pytest.raises(InvalidInput) as err:
        check_fits(two, {"CPU": 8.0, "GPU": 2.0})  # two GPUs for four replicas of one GPU each
    assert err.value.field == "distributed.num_gpus_per_replica" and "need 4 GPUs" in str(err.value)
    with pytest.raises(InvalidInput) as err:
        check_fits(Settings(server={"rerankers": ["r"]}, distributed={"replicas": 2}), {"CPU": 2.0})
    assert err.value.field == "distributed.num_cpus_per_replica" and "0.95" in str(err.value)
    # autoscaling needs room for its minimum only
    auto = Settings(server={"rerankers": ["r"]}, distributed={"autoscale_min": 1, "autoscale_max": 8})
    assert required_resources(auto) == {"CPU": 1.1, "GPU": 0.0}
    check_fits(auto, {"CPU": 2.0})
