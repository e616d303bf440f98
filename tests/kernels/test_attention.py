"""The attention backends against the PyTorch reference (STYLE lesson 6).

The Triton kernel runs on CPU tensors in Triton's interpreter (``TRITON_INTERPRET=1``), in a child process: Triton
fixes its mode when it is first imported. Shapes stay tiny: the interpreter takes about a second per launch. On a GPU
machine the ``gpu`` test compiles the kernel for real.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from foveal.errors import ConfigError, InvalidInputError
from foveal.kernels import attention, resolve_backend, sdpa_attention, triton_available
from foveal.kernels.reference import attention_reference

ROOT = Path(__file__).resolve().parents[2]
BATCH, HEADS, LENGTH, HEAD_DIM = 2, 3, 40, 32  # 40 is not a multiple of the 16-wide blocks
BLOCK = (16, 16)
N_BLOCKS = math.ceil(LENGTH / 16)
TOLERANCE = {torch.float32: 2e-5, torch.float16: 2e-3}

needs_triton = pytest.mark.skipif(not triton_available(), reason="triton is not installed")


def make_qkv(dtype=torch.float32, seed=0, length=LENGTH, strided=False):
    generator = torch.Generator().manual_seed(seed)
    shape = (BATCH, length, HEADS, HEAD_DIM) if strided else (BATCH, HEADS, length, HEAD_DIM)
    tensors = [torch.randn(shape, generator=generator).to(dtype) for _ in range(3)]
    if strided:  # the (B, N, H, D) layout a Hugging Face projection produces, viewed as (B, H, N, D)
        tensors = [t.transpose(1, 2) for t in tensors]
    return tensors


def padding_mask(lengths, length=LENGTH):
    return torch.arange(length)[None, :] < torch.as_tensor(lengths)[:, None]


def random_block_mask(seed=0, empty_row=None):
    generator = torch.Generator().manual_seed(seed)
    mask = torch.rand((BATCH * HEADS, N_BLOCKS, N_BLOCKS), generator=generator) > 0.5
    mask[..., 0] = True  # every query block keeps the first key block ...
    if empty_row is not None:
        mask[:, empty_row, :] = False  # ... except one that keeps nothing
    return mask


def naive_attention(q, k, v, scale, keep=None):
    """Textbook softmax attention in float64, for rows that keep at least one key."""
    logits = (q.double() @ k.double().transpose(-1, -2)) * scale
    if keep is not None:
        logits = logits.masked_fill(~keep, float("-inf"))
    return (torch.softmax(logits, dim=-1) @ v.double()).to(q.dtype)


def assert_close(actual, expected, dtype):
    assert not torch.isnan(actual).any()
    torch.testing.assert_close(actual.float(), expected.float(), atol=TOLERANCE[dtype], rtol=0)


# -- the reference itself ----------------------------------------------------------------------------------------------
class TestReference:
    def test_matches_textbook_softmax_with_per_head_temperature(self):
        q, k, v = make_qkv(torch.float64)
        tau = torch.tensor([1.0, 0.7, 1.3], dtype=torch.float64)
        expected = torch.cat(
            [naive_attention(q[:, h : h + 1], k[:, h : h + 1], v[:, h : h + 1], HEAD_DIM**-0.5 / tau[h]) for h in range(HEADS)],
            dim=1,
        )
        torch.testing.assert_close(attention_reference(q, k, v, temperature=tau), expected)

    def test_fully_masked_rows_are_zero_not_nan(self):
        q, k, v = make_qkv()
        keep = torch.tensor([[False] * LENGTH, [True] * LENGTH])
        out = attention_reference(q, k, v, key_padding_mask=keep)
        assert not torch.isnan(out).any()
        assert torch.equal(out[0], torch.zeros_like(out[0]))

    def test_block_mask_shapes_broadcast_alike(self):
        q, k, v = make_qkv()
        pattern = random_block_mask()[0]
        outputs = [
            attention_reference(q, k, v, block_mask=mask, block_size=BLOCK)
            for mask in (pattern, pattern[None], pattern.expand(HEADS, -1, -1), pattern.expand(BATCH * HEADS, -1, -1), pattern[None, None])
        ]
        for out in outputs[1:]:
            assert torch.equal(out, outputs[0])

    def test_rejects_wrong_shapes_and_temperatures(self):
        q, k, v = make_qkv()
        with pytest.raises(InvalidInputError, match="one value per head"):
            attention_reference(q, k, v, temperature=[1.0, 2.0])
        with pytest.raises(InvalidInputError, match="> 0"):
            attention_reference(q, k, v, temperature=0.0)
        with pytest.raises(InvalidInputError, match="n_q_blocks"):
            attention_reference(q, k, v, block_mask=torch.ones(2, 2, dtype=torch.bool), block_size=BLOCK)
        with pytest.raises(InvalidInputError, match="key_padding_mask"):
            attention_reference(q, k, v, key_padding_mask=torch.ones(BATCH, LENGTH + 1, dtype=torch.bool))


# -- the dispatcher's SDPA path ----------------------------------------------------------------------------------------
SDPA_CASES = {
    "plain": {},
    "scalar_temperature": {"temperature": 0.8},
    "per_head_temperature_padding": {"temperature": torch.tensor([1.0, 0.9, 0.8]), "key_padding_mask": padding_mask([40, 23])},
    "block_mask_with_empty_row": {"block_mask": random_block_mask(seed=1, empty_row=1), "key_padding_mask": padding_mask([31, 40])},
    "fully_masked_batch_row": {"key_padding_mask": padding_mask([0, 17]), "temperature": 0.5},
}


class TestSdpaPath:
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
    @pytest.mark.parametrize("case", list(SDPA_CASES))
    def test_matches_reference(self, case, dtype):
        q, k, v = make_qkv(dtype, seed=3)
        kwargs = dict(SDPA_CASES[case], block_size=BLOCK)
        out = attention(q, k, v, backend="sdpa", **kwargs)
        expected = attention_reference(q, k, v, **kwargs)
        assert not torch.isnan(out).any()
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)

    def test_empty_rows_are_zero(self):
        q, k, v = make_qkv()
        out = sdpa_attention(q, k, v, block_mask=random_block_mask(empty_row=2), block_size=BLOCK)
        assert torch.equal(out[:, :, 32:], torch.zeros_like(out[:, :, 32:]))
        out = sdpa_attention(q, k, v, key_padding_mask=padding_mask([0, 40]))
        assert torch.equal(out[0], torch.zeros_like(out[0]))

    def test_auto_is_sdpa_on_cpu_and_unknown_backend_lists_the_allowed(self):
        q, k, v = make_qkv()
        assert resolve_backend("auto", q) == "sdpa"
        torch.testing.assert_close(attention(q, k, v), attention(q, k, v, backend="reference"), atol=1e-5, rtol=0)
        with pytest.raises(ConfigError, match="allowed: auto, reference, sdpa, triton"):
            attention(q, k, v, backend="flash")


def test_importing_foveal_kernels_never_imports_triton_and_works_without_it():
    """Run in a fresh interpreter: ``sys.modules`` here may already hold triton."""
    script = textwrap.dedent(
        """
        import sys
        import foveal.kernels
        assert "triton" not in sys.modules, "foveal.kernels imported triton"
        sys.modules["triton"] = None  # makes `import triton` raise ImportError
        import foveal.kernels.triton_attention as module
        assert module.TRITON_AVAILABLE is False
        import torch
        from foveal.errors import ConfigError
        q = torch.zeros(1, 1, 4, 16)
        try:
            foveal.kernels.attention(q, q, q, backend="triton")
        except ConfigError as exc:
            assert "not installed" in str(exc)
        else:
            raise AssertionError("expected ConfigError")
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")


# -- the Triton kernel in the interpreter ----------------------------------------------------------------------------
# Triton picks interpreter or GPU mode once, when it is first imported, so the kernel runs in a child interpreter
# started with TRITON_INTERPRET=1 (whatever this process imported before). The child builds every case below from its
# seed, runs the kernel and saves the outputs; the assertions stay here, one test per case.


def build_triton_case(name: str) -> dict:
    """Inputs of one named case, rebuilt identically in the parent and in the child."""
    kind, dtype_name = name.rsplit("-", 1)
    dtype = {"fp32": torch.float32, "fp16": torch.float16}[dtype_name]
    tau = torch.tensor([1.0, 0.9, 0.8])
    case = {"dtype": dtype, "dispatcher": False, "length": LENGTH}
    if kind in ("padding_mask", "key_lengths"):
        q, k, v = make_qkv(dtype, seed=1, strided=True)
        lengths = torch.randint(1, LENGTH + 1, (BATCH,), generator=torch.Generator().manual_seed(7))
        lengths[0] = LENGTH
        kwargs = {"temperature": tau, "block_size": BLOCK}
        kwargs["key_padding_mask" if kind == "padding_mask" else "key_lengths"] = (
            padding_mask(lengths) if kind == "padding_mask" else lengths
        )
        case["reference_kwargs"] = {"temperature": tau, "key_padding_mask": padding_mask(lengths)}
    elif kind in ("dense", "all_blocks"):
        q, k, v = make_qkv(dtype, seed=2)
        kwargs = {"key_padding_mask": padding_mask([LENGTH, 29]), "block_size": BLOCK}
        if kind == "all_blocks":
            kwargs["block_mask"] = torch.ones(N_BLOCKS, N_BLOCKS, dtype=torch.bool)
    elif kind == "sparse_empty_row":
        q, k, v = make_qkv(dtype, seed=4)
        kwargs = {
            "temperature": torch.tensor([0.7, 1.0, 1.2]),
            "key_padding_mask": padding_mask([35, LENGTH]),
            "block_mask": random_block_mask(seed=5, empty_row=1),
            "block_size": BLOCK,
        }
    elif kind == "tall_blocks":  # BM != BN and a 4-d per-(batch, head) mask
        length = case["length"] = 48
        q, k, v = make_qkv(dtype, seed=9, length=length)
        mask = torch.rand((BATCH, HEADS, 2, 3), generator=torch.Generator().manual_seed(10)) > 0.3
        mask[..., 0] = True
        kwargs = {"temperature": 0.6, "block_mask": mask, "block_size": (32, 16)}
    elif kind == "tau_one":
        q, k, v = make_qkv(dtype, seed=6)
        kwargs = {"temperature": 1.0, "block_size": BLOCK}
    elif kind == "dispatcher_fully_masked":
        q, k, v = make_qkv(dtype, seed=8)
        kwargs = {"key_padding_mask": padding_mask([0, LENGTH]), "block_size": BLOCK}
        case["dispatcher"] = True
    else:  # pragma: no cover
        raise KeyError(name)
    case.update(q=q, k=k, v=v, kwargs=kwargs)
    case.setdefault("reference_kwargs", {key: val for key, val in kwargs.items()})
    return case


TRITON_CASES = [
    f"{kind}-{dtype}"
    for kind in ("padding_mask", "key_lengths", "dense", "all_blocks", "sparse_empty_row", "tall_blocks", "tau_one")
    for dtype in ("fp32", "fp16")
] + ["dispatcher_fully_masked-fp32"]

_CHILD = """
import sys
import torch
from foveal.kernels import attention
from foveal.kernels.triton_attention import interpreter_enabled, triton_attention
from tests.kernels.test_attention import TRITON_CASES, build_triton_case

assert interpreter_enabled(), "triton is not in interpreter mode"
results = {}
for name in TRITON_CASES:
    case = build_triton_case(name)
    try:
        if case["dispatcher"]:
            out = attention(case["q"], case["k"], case["v"], backend="triton", **case["kwargs"])
        else:
            out = triton_attention(case["q"], case["k"], case["v"], **case["kwargs"])
        results[name] = out
    except Exception as exc:  # reported by the test of that case
        results[name] = f"{type(exc).__name__}: {exc}"
torch.save(results, sys.argv[1])
"""


@pytest.fixture(scope="module")
def triton_outputs(tmp_path_factory):
    path = tmp_path_factory.mktemp("triton") / "outputs.pt"
    env = dict(os.environ, TRITON_INTERPRET="1")
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return torch.load(path)


def triton_output(outputs, name):
    out = outputs[name]
    if isinstance(out, str):
        pytest.fail(f"the kernel raised: {out}")
    return out


@needs_triton
class TestTritonKernel:
    @pytest.mark.parametrize("name", TRITON_CASES)
    def test_matches_reference(self, triton_outputs, name):
        case = build_triton_case(name)
        out = triton_output(triton_outputs, name)
        assert out.dtype == case["dtype"] and out.shape == (BATCH, HEADS, case["length"], HEAD_DIM)
        expected = attention_reference(case["q"], case["k"], case["v"], **case["reference_kwargs"])
        assert_close(out, expected, case["dtype"])

    @pytest.mark.parametrize("dtype", ["fp32", "fp16"])
    def test_all_blocks_mask_equals_dense_bit_for_bit(self, triton_outputs, dtype):
        # the same tiles in the same order
        assert torch.equal(triton_output(triton_outputs, f"all_blocks-{dtype}"), triton_output(triton_outputs, f"dense-{dtype}"))

    @pytest.mark.parametrize("dtype", ["fp32", "fp16"])
    def test_empty_query_block_gives_zeros(self, triton_outputs, dtype):
        out = triton_output(triton_outputs, f"sparse_empty_row-{dtype}")
        assert torch.equal(out[:, :, 16:32], torch.zeros_like(out[:, :, 16:32]))  # query block 1 keeps no key

    @pytest.mark.parametrize("dtype", ["fp32", "fp16"])
    def test_temperature_one_equals_sdpa(self, triton_outputs, dtype):
        case = build_triton_case(f"tau_one-{dtype}")
        expected = F.scaled_dot_product_attention(case["q"].float(), case["k"].float(), case["v"].float())
        assert_close(triton_output(triton_outputs, f"tau_one-{dtype}"), expected, case["dtype"])

    def test_fully_masked_batch_row_is_zero(self, triton_outputs):
        out = triton_output(triton_outputs, "dispatcher_fully_masked-fp32")
        assert torch.equal(out[0], torch.zeros_like(out[0]))

    def test_rejects_bad_blocks_and_cpu_tensors_outside_the_interpreter(self):
        from foveal.kernels import triton_attention as module

        q, k, v = make_qkv()
        if module.interpreter_enabled():  # pragma: no cover - only when the whole run has TRITON_INTERPRET=1
            pytest.skip("this process runs triton in interpreter mode")
        with pytest.raises(InvalidInputError, match="power of two >= 16"):
            module.triton_attention(q, k, v, block_size=(8, 16))
        with pytest.raises(InvalidInputError, match="CUDA"):
            module.triton_attention(q, k, v)

    def test_block_mask_to_lut_lists_kept_blocks_in_order(self):
        from foveal.kernels.triton_attention import block_mask_to_lut

        mask = torch.tensor([[True, False, True], [False, False, False], [False, True, False]])
        count, index = block_mask_to_lut(mask, BATCH, HEADS, 3, 3)
        assert count.shape == (BATCH, HEADS, 3) and count[1, 2].tolist() == [2, 0, 1]
        assert index[0, 0, 0, :2].tolist() == [0, 2] and index[1, 1, 2, :1].tolist() == [1]


@pytest.mark.gpu
@needs_triton
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=["fp16", "fp32"])
def test_triton_on_gpu_matches_reference(dtype):
    from foveal.kernels.triton_attention import interpreter_enabled, triton_attention

    if interpreter_enabled():
        pytest.skip("triton was imported in interpreter mode")
    generator = torch.Generator(device="cuda").manual_seed(0)
    batch, heads, length, head_dim = 2, 12, 300, 64
    q, k, v = (torch.randn(batch, heads, length, head_dim, device="cuda", generator=generator, dtype=dtype) for _ in range(3))
    keep = torch.arange(length, device="cuda")[None, :] < torch.tensor([300, 171], device="cuda")[:, None]
    n_blocks = math.ceil(length / 64)
    mask = torch.rand(batch * heads, n_blocks, n_blocks, device="cuda", generator=generator) > 0.4
    mask[..., 0] = True
    mask[:, 2] = False
    tau = torch.linspace(0.7, 1.2, heads, device="cuda")
    kwargs = dict(temperature=tau, key_padding_mask=keep, block_mask=mask, block_size=(64, 64))
    out = triton_attention(q, k, v, **kwargs)
    torch.testing.assert_close(out.float(), attention_reference(q, k, v, **kwargs).float(), atol=2e-3, rtol=0)
    assert torch.equal(out[:, :, 128:192], torch.zeros_like(out[:, :, 128:192]))
