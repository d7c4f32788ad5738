"""Collections: vector stores (FAISS + SQLite, Milvus), BM25, fusion, chunking and document readers.

The public entry point is :class:`qrank.pipeline.Pipeline`; the contract a store fulfils is
:class:`qrank.index.store.VectorStore`.
"""
