"""Evaluation: quality (ranx metrics) and cost (latency, throughput, memory) of retrieval systems.

``qrank eval`` (see :mod:`qrank.cli.eval`) runs BM25, dense, hybrid and reranked systems on a data set
and writes ``metrics.json``, per-query results, ``report.md`` and a quality-vs-latency plot.
"""
