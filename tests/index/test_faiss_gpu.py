"""The GPU replica, with faiss's GPU functions faked at the faiss boundary only (StandardGpuResources,
index_cpu_to_gpu, get_num_gpus; the fake GPU index does its math with a CPU copy and, like a GPU index, takes no
IDSelector and at most 2048 neighbours): filtered and unfiltered searches are served by the replica and equal the
CPU index's answers, and writes update it in place instead of copying the index again."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from foveal.index import faiss_gpu
from foveal.index.base import PASSAGE_BITS
from foveal.index.faiss_index import FaissVectorIndex

DIM = 8


class FakeGpuIndex:
    def __init__(self, inner) -> None:
        self.cpu = faiss.clone_index(inner)
        self.adds = self.searches = 0

    @property
    def ntotal(self) -> int:
        return self.cpu.ntotal

    @property
    def nprobe(self) -> int:
        return faiss.extract_index_ivf(self.cpu).nprobe

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        faiss.extract_index_ivf(self.cpu).nprobe = value

    def add(self, vectors) -> None:
        self.adds += 1
        self.cpu.add(vectors)

    def search(self, vectors, k, params=None):
        assert params is None, "a GPU index takes no IDSelector"
        assert 0 < k <= faiss_gpu.GPU_MAX_K
        self.searches += 1
        return self.cpu.search(vectors, k)


@pytest.fixture()
def fake_gpu(monkeypatch):
    made: list[FakeGpuIndex] = []

    def index_cpu_to_gpu(resources, device, inner):
        assert isinstance(resources, FakeResources) and device == 0
        if "HNSW" in type(faiss.downcast_index(inner)).__name__:
            raise RuntimeError("not implemented for GPU")
        made.append(FakeGpuIndex(inner))
        return made[-1]

    class FakeResources:
        pass

    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1, raising=False)
    monkeypatch.setattr(faiss, "StandardGpuResources", FakeResources, raising=False)
    monkeypatch.setattr(faiss, "index_cpu_to_gpu", index_cpu_to_gpu, raising=False)
    monkeypatch.setattr(faiss_gpu, "_resources", None)
    return made


def _vectors(rng, n):
    v = rng.standard_normal((n, DIM)).astype("float32")
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _ids(keys, passage=0):
    return (np.asarray(keys, np.int64) << PASSAGE_BITS) | passage


def _pair(factory):
    gpu, cpu = FaissVectorIndex(DIM, factory), FaissVectorIndex(DIM, factory, gpu="off")
    for index in (gpu, cpu):  # every allow-list through the replica (the CPU scores narrow ones exactly)
        index.exact_search_min, index.exact_search_fraction = 0, 0.0
    return gpu, cpu


def _same_answers(gpu, cpu, queries, allowed_keys):
    keys = np.unique(np.asarray(list(allowed_keys), np.int64))
    # no filter, passage ids, and documents (a DocFilter: the form searches use)
    for make in (lambda index: None, lambda index: _ids(keys), lambda index: index.doc_filter(keys)):
        for k in (1, 10):
            got_scores, got = gpu.search(queries, k, make(gpu))
            want_scores, want = cpu.search(queries, k, make(cpu))
            np.testing.assert_array_equal(got, want)
            np.testing.assert_allclose(got_scores, want_scores, atol=1e-5)


@pytest.mark.parametrize("factory", ["Flat", "IVF4,Flat"])
def test_replica_serves_filtered_and_unfiltered_and_is_updated_in_place(fake_gpu, factory):
    rng = np.random.default_rng(0)
    gpu, cpu = _pair(factory)
    assert gpu.gpu_status == "gpu" and cpu.gpu_status == "cpu"
    queries = _vectors(rng, 5)
    vectors = _vectors(rng, 400)
    for start in range(0, 400, 100):
        for index in (gpu, cpu):
            index.add(_ids(range(start, start + 100)), vectors[start:start + 100])
    _same_answers(gpu, cpu, queries, range(0, 400, 2))
    assert gpu.gpu_builds == 1 and len(fake_gpu) == 1
    replica = fake_gpu[0]
    served = replica.searches
    assert served >= 6

    # writes: an add, a removal, a replacement of removed documents (same ids, new vectors)
    more = _vectors(rng, 40)
    for index in (gpu, cpu):
        index.add(_ids(range(400, 440)), more)
        index.remove_documents(range(0, 60))
        index.add(_ids(range(0, 20)), more[:20])
    _same_answers(gpu, cpu, queries, list(range(0, 20, 2)) + list(range(100, 440, 3)))
    assert gpu.gpu_builds == 1 and len(fake_gpu) == 1, "a write copied the index to the GPU again"
    assert replica.adds == 2 and replica.searches > served
    assert gpu._gpu_replica.dead == 60 and len(gpu._gpu_replica) == len(gpu)


def test_many_removals_copy_the_index_again(fake_gpu):
    rng = np.random.default_rng(1)
    gpu, cpu = _pair("Flat")
    vectors = _vectors(rng, 200)
    for index in (gpu, cpu):
        index.add(_ids(range(200)), vectors)
    _same_answers(gpu, cpu, _vectors(rng, 3), range(0, 200, 3))
    for index in (gpu, cpu):
        index.remove_documents(range(0, 120))
    _same_answers(gpu, cpu, _vectors(rng, 3), range(100, 200, 3))
    assert gpu.gpu_builds == 2 and gpu._gpu_replica.dead == 0


def test_hnsw_searches_on_the_cpu_and_says_why(fake_gpu):
    rng = np.random.default_rng(2)
    gpu, cpu = _pair("HNSW16")
    vectors = _vectors(rng, 100)
    for index in (gpu, cpu):
        index.add(_ids(range(100)), vectors)
    _same_answers(gpu, cpu, _vectors(rng, 3), range(0, 100, 2))
    assert fake_gpu == [] and "HNSW" in gpu.gpu_status and gpu.gpu_builds == 0


def test_more_than_a_gpu_search_returns_falls_back_to_the_cpu(fake_gpu):
    rng = np.random.default_rng(3)
    gpu, cpu = _pair("Flat")
    vectors = _vectors(rng, 3000)
    for index in (gpu, cpu):
        index.add(_ids(range(3000)), vectors)
    # 3 allowed of 3000: k' would be 2 * 10 * 3000 / 3 > 2048, so the CPU answers (exactly)
    _same_answers(gpu, cpu, _vectors(rng, 2), [5, 17, 2999])
    assert gpu.gpu_builds == 1
