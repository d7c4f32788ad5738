"""The write side of :class:`~qrank.pipeline.Pipeline`: bring checked documents into a collection, skipping
the unchanged ones, chunking and embedding the rest in token-budget batches and committing each document as
soon as all its passages are embedded, so an interrupted add keeps its finished work. Documents are checked
and the collection's write lock is taken by the pipeline, which passes its embedder and chunker in.

>>> import tempfile
>>> from qrank.cache import CachedEmbedder
>>> from qrank.embedder import Embedder
>>> from qrank.index.collection import Collection, Manifest
>>> from qrank.index.documents import to_documents
>>> settings = Settings(home=tempfile.mkdtemp())
>>> em = CachedEmbedder(Embedder.from_pretrained("../shared/models/all-MiniLM-L6-v2"), None)
>>> col = Collection.create(settings, Manifest("docs", "faiss", em.dim, {"name": "e"}, 256, 32))
>>> indexer = Indexer(col, em, Chunker(em, 256, 32), settings)
>>> docs = to_documents(["Rotate keys every 90 days.", "Bananas are yellow."], ids=["k", "b"])
>>> indexer.add(docs, progress=False)  # doctest: +NORMALIZE_WHITESPACE
{'documents': 2, 'added': 2, 'replaced': 0, 'unchanged': 0, 'passages': 2, 'embedded': 2,
 'same_text': 0, 'count': 2}
>>> indexer.add(docs, progress=False)["unchanged"]
2
>>> indexer.add(to_documents(["Bananas are yellow."], ids=["b2"]), progress=False)["same_text"]  # b's text again
1
>>> col.close()

An add says when a document it brings has the same content (text, title, metadata: its version hash) as a
document stored, or added with it, under another id: usually one file added twice through different paths
(a file's id is its path relative to the folder given). It is one warning per add with a few example pairs and
the count ``same_text``; the document is still added (ids are the caller's). The check is a lookup of the
hashes in the store's index (``ids_with_hashes``), no model work; a store without that lookup skips it.
"""

from __future__ import annotations

import logging

import numpy as np

from .cache import CachedEmbedder
from .engine.batching import plan_batches
from .index.chunking import Chunker
from .index.collection import Collection
from .index.documents import Document, doc_hash, indexed_text
from .index.store import Passage
from .settings import Settings

__all__ = ["Indexer"]

log = logging.getLogger(__name__)
_EXAMPLES = 3  # example id pairs named in the same-text warning


class Indexer:
    """Adds documents to ``collection`` with ``embedder`` and ``chunker`` (the collection's own), batched by
    ``settings.index.ingest_window`` and ``settings.engine``; holds nothing else, so one is cheap to make per add.
    """

    def __init__(self, collection: Collection, embedder: CachedEmbedder, chunker: Chunker, settings: Settings) -> None:
        self.collection = collection
        self.embedder = embedder
        self.chunker = chunker
        self.settings = settings

    def add(self, docs: list[Document], progress: bool | None) -> dict[str, int]:
        """Add or replace ``docs`` and persist the store; returns the counts
        :meth:`~qrank.pipeline.Pipeline.add` returns."""
        from .progress import progress as progress_bar

        em = self.embedder
        chunker = self.chunker
        chunking = (chunker.max_tokens, chunker.overlap)
        store = self.collection.store
        report = {"documents": len(docs), "added": 0, "replaced": 0, "unchanged": 0, "passages": 0, "embedded": 0,
                  "same_text": 0}
        embedded_before = em.embedded
        window = self.settings.index.ingest_window
        twins = _Twins(store)
        with progress_bar(total=len(docs), desc=f"indexing {self.collection.name}", unit="doc",
                          enabled=progress) as bar:
            for start in range(0, len(docs), window):
                part = docs[start : start + window]
                known = store.hashes([d.id for d in part])
                hashes = [doc_hash(d, chunking) for d in part]
                twins.check(part, hashes)
                todo = []
                for d, h in zip(part, hashes):
                    if known.get(d.id) == h:
                        report["unchanged"] += 1
                    else:
                        todo.append((d, h))
                        report["replaced" if d.id in known else "added"] += 1
                bar.update(len(part) - len(todo))
                if todo:
                    report["passages"] += self._ingest(todo, bar)
        store.persist()
        report["embedded"] = em.embedded - embedded_before
        report["same_text"] = twins.count
        report["count"] = store.count()
        twins.warn()
        return report

    def _ingest(self, todo: list[tuple[Document, str]], bar) -> int:
        """Chunk, embed in token-budget batches, and commit each document as soon as all its passages are embedded."""
        chunker = self.chunker
        texts = [indexed_text(d) for d, _ in todo]
        passages: list[Passage] = []
        lengths: list[int] = []
        owner: list[int] = []
        first: list[int] = []
        for di, ((doc, h), text, spans) in enumerate(zip(todo, texts, chunker.split(texts))):
            first.append(len(passages))
            for ci, (s, e, n) in enumerate(spans):
                passages.append(Passage(doc.id, ci, s, text[s:e], doc.title, doc.metadata, h))
                lengths.append(n + chunker.specials)
                owner.append(di)
        counts = [b - a for a, b in zip(first, first[1:] + [len(passages)])]
        remaining = list(counts)
        vectors = np.zeros((len(passages), self.collection.manifest.dim), dtype=np.float32)
        eng = self.settings.engine
        for batch in plan_batches(lengths, eng.max_batch_tokens, eng.max_batch_size):
            vectors[batch] = self.embedder.embed([passages[i].text for i in batch])
            done = []
            for i in batch:
                remaining[owner[i]] -= 1
                if remaining[owner[i]] == 0:
                    done.append(owner[i])
            if done:
                rows = [j for di in sorted(done) for j in range(first[di], first[di] + counts[di])]
                self.collection.store.add([passages[j] for j in rows], vectors[rows])
                bar.update(len(done))
        return len(passages)


class _Twins:
    """Documents of one add whose version hash is stored, or came earlier in the add, under another id."""

    def __init__(self, store) -> None:
        self.lookup = getattr(store, "ids_with_hashes", None)
        self.seen: dict[str, str] = {}  # hash -> the first id of this add that has it
        self.count = 0
        self.pairs: list[tuple[str, str]] = []

    def check(self, part: list[Document], hashes: list[str]) -> None:
        if self.lookup is None:
            return
        stored = self.lookup(hashes)
        for d, h in zip(part, hashes):
            other = next((i for i in stored.get(h, ()) if i != d.id), None)
            if other is None and self.seen.get(h, d.id) != d.id:
                other = self.seen[h]
            self.seen.setdefault(h, d.id)
            if other is not None:
                self.count += 1
                if len(self.pairs) < _EXAMPLES and (other, d.id) not in self.pairs:
                    self.pairs.append((d.id, other))

    def warn(self) -> None:
        if not self.count:
            return
        one = self.count == 1
        examples = ", ".join(f"{a} = {b}" for a, b in self.pairs)
        log.warning("%d %s the same text as %s, e.g. %s; same file added through another path? (a file's id "
                    "is its path relative to the folder given)", self.count,
                    "document has" if one else "documents have",
                    "a stored one under another id" if one else "stored ones under other ids", examples)
