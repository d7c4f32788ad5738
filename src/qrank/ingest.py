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

An add says when a document it brings will have the same content (text, title, metadata: its version hash) as
another document once the add is done: one stored under an id the add does not bring, or one earlier in the add
(a stored document that the add gives other content is no twin of its old content). From files, that is usually
one file added twice through different paths (``qrank index add`` says so). It is one warning per add with a
few example pairs and the count ``same_text``; the document is still added (ids are the caller's).

The check is one lookup of the add's distinct hashes in the store's index, before anything is written
(``ids_with_hashes(hashes, limit={hash: n})``), asking per hash for one more id than the add's own ids stored
with it, so its cost is what the add brings, never how many copies of a text are stored; no model work. A store
without that lookup skips it.

>>> indexer.add(to_documents(["Bananas are green.", "Bananas are yellow."], ids=["b", "b3"]),
...             progress=False)["same_text"]  # b changes; b3 brings b's old text, still b2's: b3 = b2
1
>>> col.close()
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
        with progress_bar(total=len(docs), desc=f"indexing {self.collection.name}", unit="doc",
                          enabled=progress) as bar:
            hashes = [doc_hash(d, chunking) for d in docs]
            known = store.hashes([d.id for d in docs])  # the stored versions, before anything is written
            twins = _Twins.find(store, docs, hashes, known)
            for start in range(0, len(docs), window):
                part = docs[start : start + window]
                todo = []
                for d, h in zip(part, hashes[start : start + window]):
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
    """The documents of one add that will share their version hash with another document once the add is done:
    one stored under an id the add does not bring, or one that came earlier in the add. Ids the add brings are
    no stored twins (each either keeps its content, and is in the add with it, or gets other content)."""

    def __init__(self) -> None:
        self.count = 0
        self.pairs: list[tuple[str, str]] = []  # (a document of the add, its twin): the warning's examples

    @classmethod
    def find(cls, store, docs: list[Document], hashes: list[str], known: dict[str, str]) -> _Twins:
        """``known``: the stored hash of each id of ``docs`` that is stored. One lookup of the distinct hashes,
        asking for one id more than the add's own ids stored with each: enough to find an id outside the add."""
        twins = cls()
        lookup = getattr(store, "ids_with_hashes", None)
        if lookup is None or not docs:
            return twins
        own = set(known)  # the add's ids that are stored
        limit = dict.fromkeys(hashes, 1)
        for doc_id in own:
            if known[doc_id] in limit:
                limit[known[doc_id]] += 1
        stored = lookup(list(limit), limit=limit)
        outside = {h: next((i for i in ids if i not in own), None) for h, ids in stored.items()}
        first: dict[str, str] = {}  # hash -> the first id of this add that has it
        for d, h in zip(docs, hashes):
            other = outside.get(h)
            if other is None and first.get(h, d.id) != d.id:
                other = first[h]
            first.setdefault(h, d.id)
            if other is not None:
                twins.count += 1
                if len(twins.pairs) < _EXAMPLES and (other, d.id) not in twins.pairs:
                    twins.pairs.append((d.id, other))
        return twins

    def warn(self) -> None:
        if not self.count:
            return
        one = self.count == 1
        examples = ", ".join(f"{a} = {b}" for a, b in self.pairs)
        log.warning("%d %s the same text as %s, e.g. %s", self.count, "document has" if one else "documents have",
                    "another document under another id" if one else "other documents under other ids", examples)
