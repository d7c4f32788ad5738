"""``POST /v1/search``, ``GET /v1/collections``, ``POST /v1/collections/{name}/documents`` and
``POST /v1/collections/{name}/documents/delete``.

The pipeline is synchronous, so each call runs in a worker thread; its model work still goes through the
served models' queues (see :mod:`qrank.server.queued_models`).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, Response

from ...errors import InvalidInput
from ..inference import check_count, check_query_chars, watched
from ..schemas.search import (
    COLLECTION_PATTERN,
    AddDocumentsRequest,
    DeleteDocumentsRequest,
    DeleteDocumentsResponse,
    SearchHitItem,
    SearchRequest,
    SearchResponse,
)
from . import json_response, state_of

router = APIRouter(tags=["search"])


@router.get("/v1/collections", summary="List collections")
async def list_collections(request: Request) -> JSONResponse:
    state = state_of(request)
    return JSONResponse({"object": "list", "data": await asyncio.to_thread(state.collections().names)})


@router.post(
    "/v1/search", response_model=None, responses={200: {"model": SearchResponse}}, summary="Search a collection"
)
async def search(request: Request, body: SearchRequest) -> Response:
    state = state_of(request)
    limits = state.settings.server
    check_query_chars(body.query, "query", limits.max_document_chars)
    if body.k > limits.max_documents:
        raise InvalidInput("k", f"must be at most {limits.max_documents}, got {body.k}")
    if body.candidates is not None and body.candidates > limits.max_documents:
        raise InvalidInput("candidates", f"must be at most {limits.max_documents}, got {body.candidates}")
    if body.mode == "bm25" and body.rerank:
        raise InvalidInput("rerank", "mode 'bm25' returns BM25 alone; leave rerank out")
    if body.mode == "bm25" and body.min_score is not None:
        raise InvalidInput("min_score", "filters on the rerank score; mode 'bm25' does not rerank")
    hits = await watched(request, asyncio.to_thread(_search, state, body))
    return json_response(SearchResponse(collection=body.collection, results=hits))


def _search(state, body: SearchRequest) -> list[SearchHitItem]:
    with _damaged_store(state, body.collection) as used:
        return _search_open(state, body, used)


@contextlib.contextmanager
def _damaged_store(state, name: str):
    """A store found damaged mid-request answers as CorruptStore naming the collection (a JSON error like any
    other, not an internal error), and the server forgets its opened copy, so a rebuilt collection is served.

    Yields a list the request appends the pipeline it got to: only that pipeline's collection is forgotten (a
    copy another request opened since stays), and only for real damage: another SQLite error (a closed
    connection, a full disk, a lock) goes on as it is and forgets nothing."""
    from ...index.store import CorruptStore, store_errors

    used: list = []
    try:
        with store_errors(name):
            yield used
    except CorruptStore:
        for pipeline in used:
            state.collections().forget(name, pipeline)
        raise


def _search_open(state, body: SearchRequest, used: list) -> list[SearchHitItem]:
    pipeline = state.collections().pipeline(
        body.collection, reranker=body.reranker if body.rerank is not False else None
    )
    used.append(pipeline)
    if body.mode == "bm25":  # BM25 alone, no model runs: Pipeline.lexical_search (the door refused rerank=true)
        hits = pipeline.lexical_search(body.query, k=body.k, filter=body.filter)
        return [SearchHitItem(**h.to_dict()) for h in hits]
    hits = pipeline.search(
        body.query,
        k=body.k,
        candidates=body.candidates,
        rerank=body.rerank,
        hybrid=body.hybrid or body.mode == "hybrid",
        filter=body.filter,
        reranker_instruction=body.reranker_instruction,
        query_task=body.query_task,
        query_prompt=body.query_prompt,
        instruction=body.instruction,
        min_score=body.min_score,
    )
    return [SearchHitItem(**h.to_dict()) for h in hits]


@router.post("/v1/collections/{name}/documents", summary="Add or replace documents (creates the collection)")
async def add_documents(
    request: Request, name: Annotated[str, Path(pattern=COLLECTION_PATTERN)], body: AddDocumentsRequest
) -> JSONResponse:
    state = state_of(request)
    limits = state.settings.server
    check_count(len(body.documents), "documents", limits.max_inputs)
    for i, doc in enumerate(body.documents):
        text = doc if isinstance(doc, str) else doc.get("text")
        if isinstance(text, str) and len(text) > limits.max_document_chars * 100:
            raise InvalidInput(
                f"documents[{i}]", f"{len(text)} characters; split documents above {limits.max_document_chars * 100}"
            )

    def add() -> dict:
        with _damaged_store(state, name) as used:
            pipeline = state.collections().create_or_open(name, body.embedder)
            used.append(pipeline)
            return pipeline.add(body.documents, ids=body.ids, metadata=body.metadata, progress=False)

    report = await asyncio.to_thread(add)
    return JSONResponse({"collection": name, **report})


@router.post(
    "/v1/collections/{name}/documents/delete",
    response_model=None,
    responses={200: {"model": DeleteDocumentsResponse}},
    summary="Delete documents by id",
)
async def delete_documents(
    request: Request, name: Annotated[str, Path(pattern=COLLECTION_PATTERN)], body: DeleteDocumentsRequest
) -> Response:
    """Remove the named documents (their passages, vectors, BM25 entries and cached scores) from an existing
    collection, under its write lock, as adding does. Ids the collection does not hold are reported, not refused."""
    state = state_of(request)
    check_count(len(body.ids), "ids", state.settings.server.max_inputs)
    ids = list(dict.fromkeys(body.ids))  # each id once, in request order

    def delete() -> dict:
        with _damaged_store(state, name) as used:
            pipeline = state.collections().pipeline(name)  # CollectionNotFound (404) names an unknown collection
            used.append(pipeline)
            store = pipeline.collection.store
            with pipeline.collection.writing():  # an add of the same collection finishes first, or waits for us
                stored = store.hashes(ids)
                deleted = pipeline.delete(ids)
                count = store.count()
        return {"deleted": deleted, "not_found": [i for i in ids if i not in stored], "count": count}

    report = await asyncio.to_thread(delete)
    return json_response(DeleteDocumentsResponse(collection=name, **report))
