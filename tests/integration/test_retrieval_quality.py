"""Retrieval quality on a real corpus: the int8 model plus the ANN index against exact
search with the PyTorch fp32 reference.

Documents: the 869 distinct English answers of chatterbot-corpus; queries: every 4th
question (218). The reference vectors (tests/data/retrieval_*.npy) were produced by
sentence-transformers in model_artifacts/build.py; here the documents and queries are
embedded with the shipped int8 model, indexed with usearch, and each query's top 10 is
compared with the reference's exact top 10.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from ragserve.index.ann import IndexParams, VectorIndex

K = 10


@pytest.fixture(scope="module")
def reference(repo_root):
    data = repo_root / "tests" / "data"
    documents = json.loads((data / "retrieval_documents.json").read_text(encoding="utf-8"))
    queries = json.loads((data / "retrieval_queries.json").read_text(encoding="utf-8"))
    doc_vectors = np.load(data / "retrieval_documents.npy").astype(np.float32)
    query_vectors = np.load(data / "retrieval_queries.npy").astype(np.float32)
    assert len(documents) == len(doc_vectors) > 800 and len(queries) == len(query_vectors) > 200
    return documents, queries, doc_vectors, query_vectors


@pytest.fixture(scope="module")
def ours(encoder, reference):
    documents, queries, _, _ = reference
    return encoder.embed(documents), encoder.embed(queries)


def exact_top(doc_vectors: np.ndarray, query_vectors: np.ndarray, k: int) -> np.ndarray:
    scores = query_vectors @ doc_vectors.T
    top = np.argpartition(-scores, k, axis=1)[:, :k]
    order = np.take_along_axis(scores, top, axis=1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(top, order, axis=1)


def test_the_demo_corpus_is_what_the_reference_was_built_from(reference):
    from ragserve.local.demo import qa_pairs

    documents, queries, _, _ = reference
    pairs = qa_pairs()
    assert documents == [answer for _, _, answer in pairs]
    assert queries == [question for _, question, _ in pairs[::4]]


@pytest.mark.parametrize("dtype", ["f16", "i8", "b1"])
def test_int8_model_and_index_find_the_reference_top_10(reference, ours, dtype):
    _, _, ref_docs, ref_queries = reference
    doc_vectors, query_vectors = ours
    truth = exact_top(ref_docs, ref_queries, K)
    index = VectorIndex.build(doc_vectors, IndexParams(dtype=dtype))

    overlaps = []
    for query, expected in zip(query_vectors, truth, strict=True):
        rows, _ = index.search(query, K)
        overlaps.append(len(set(rows.tolist()) & set(expected.tolist())))
    mean_overlap = float(np.mean(overlaps))
    assert mean_overlap >= 8.0, f"{dtype}: {mean_overlap:.2f} of the reference top 10 on average"


def test_the_int8_model_alone_is_close_to_the_reference(reference, ours):
    _, _, ref_docs, _ = reference
    doc_vectors, _ = ours
    cosines = np.sum(doc_vectors * ref_docs, axis=1) / np.linalg.norm(ref_docs, axis=1)
    assert cosines.mean() >= 0.99
