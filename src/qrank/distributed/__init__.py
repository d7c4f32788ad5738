"""Scale-out: qrank's app on Ray Serve (:mod:`qrank.distributed.ray_serve`). Imports Ray only when used."""
