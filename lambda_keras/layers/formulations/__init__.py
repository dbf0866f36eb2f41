"""The position-term formulations of the lambda layer, and the rule that picks one.

The position term of a lambda layer, sum_k q_n^h[k] lambda^p_n[k, v] with
lambda^p_n = sum_{m,u} E[n, m, k, u] V[m, v, u], is one function with five formulations
(same outputs up to float round-off; tests/test_formulations.py checks each against the NumPy
reference of the paper):

- "queries_first": q . E first, an h x m x u map per query, then . V. Fewest FLOPs and least
  memory while that map is no larger than the k x v lambda it replaces (h m u <= k v) and a
  local scope covers most of the map. In a strided layer the average pool that follows is
  applied to those maps before . V (`queries_first_pooled`: the second contraction at a quarter
  of the positions).
- "query_windows" ("local" position mode): q . E first too, but in window coordinates: one GEMM
  gives every query's scores over its r x r window, which are spread over the context rows of
  its block of query rows and meet column windows of V in one batched matmul. A strided layer's
  pool is folded into that GEMM (the pooled query's window is (r + 2)^2; 9 taps x |k| deep), so
  nothing runs at the unpooled positions after it. Memory Theta(b n h r (r + block rows) u).
- "lambdas_first": E . V first, 'nmuk,bmvu->bnkv' (the paper's global einsum), memory
  Theta(k n m + b n k v) with no batch-dependent n x m map; static sizes.
- "row_windows" ("local" position mode): the r x r scope as one einsum over row windows of V and
  banded column matrices of the kernel; memory Theta(b n r v), linear in the positions; static
  sizes.
- "conv" ("local" position mode): a 2-D convolution over V with the value depth folded into the
  batch, the paper's lambda convolution; memory Theta(b n k v); any (dynamic) input size.

Which one is fastest depends on the map size, on forward vs training, and on what runs it: the
same r x r convolution with one input channel is fast with TensorFlow's oneDNN kernels, 7-8x
slower without them (TensorFlow enables oneDNN by default only on CPUs with AVX-512), and slow
under XLA (TF `jit_compile=True`, JAX); without oneDNN, TensorFlow's malloc allocator makes large
temporaries dear; the CPU matters too (the same engine ranks formulations differently with and
without AVX-512, and some cells differently on an Intel and an AMD CPU with AVX-512). `choose` is
the rule: a pure function of the shapes and of the `Runtime` (backend, XLA or not, oneDNN state, CPU
allocator, device, kind of CPU) the layer traces under. Its thresholds come from
`benchmarks/formulations.py`, run on three kinds of CPU (`lambda_keras.runtime.cpu_kind()`: an
Intel Xeon with AVX-512, an AMD EPYC with AVX2 only and one with AVX-512;
benchmarks/results/formulations/<cpu>.json, tables in benchmarks/README.md), and
tests/test_formulation_rule.py checks that, in every measured cell of each, the rule's pick is
within 1.2x of the fastest formulation.
On a GPU the JAX and PyTorch rows are those measured on an NVIDIA H200 (`GPU_RULE`; the same
check holds on its table). NOTE: TensorFlow on a GPU and TPUs were not measured; there the rule
uses the XLA (TF on TPU, TF jit_compile on a GPU) or the no-oneDNN TensorFlow rows, a guess
documented as such. Other CPUs (ARM, Intel without AVX-512)
get the rows of the measured CPU they resemble by AVX-512 (`cpu_rows`), also a guess.

Where the rule is a guess (or to be sure), `autotune(model)` measures every formulation of each
lambda layer of a model where it runs and stores the fastest; "auto" then uses the stored picks
(`autotuning`; `LAMBDA_KERAS_AUTOTUNE=0` turns them off).

The package: `rule` (the measured rule tables for the `Runtime` a layer runs in, which
lambda_keras/runtime.py describes and `current_runtime` detects, and `choose`), `execution`
(`plan`: what one call does beyond the pick, i.e. where a strided layer pools, query windows'
blocks and batch parts or a loop over the images, whether training recomputes them in the
backward pass, the engines' forms of the products),
`autotuning` (measured picks, stored per device) and `position_term` (the formulations' tensor
code); everything is re-exported here.
"""

from lambda_keras.layers.formulations.position_term import (  # noqa: F401
    QUERY_BLOCK_SCOPES,
    WINDOW_TILE_SCOPES,
    batched_matmul,
    conv,
    image_by_image,
    in_batch_parts,
    lambdas_first,
    pool_taps,
    position_embeddings,
    queries_first,
    queries_first_pooled,
    query_windows,
    query_windows_bytes,
    query_windows_shape,
    recomputed_image_by_image,
    relative_offsets,
    row_windows,
    static_tables,
)
from lambda_keras.layers.formulations.autotuning import (  # noqa: F401
    autotune,
    estimate_bytes,
    tuned_formulation,
)
from lambda_keras.runtime import Runtime, current_runtime  # noqa: F401 (what the rule reads)
from lambda_keras.layers.formulations.rule import (  # noqa: F401
    AMD_AVX512_RULE,
    CPU_RULES,
    ENGINES,
    GPU_RULE,
    INTEL_AVX512_RULE,
    LOCAL_RULE,
    STRIDED_WINDOWS,
    WITHOUT_AVX512_RULE,
    choose,
    cpu_rows,
    phase_of,
    rule_for,
)
from lambda_keras.layers.formulations.execution import (  # noqa: F401
    BROADCAST_EMBEDDINGS_ENGINES,
    IMAGE_LOOPS,
    POOLED_MAPS_ENGINES,
    REMAT_MIN_BYTES,
    SEPARATE_PRODUCTS_ENGINES,
    Plan,
    batch_parts,
    plan,
    rematerialized,
    traced_without_loops,
    window_blocks,
)

FORMULATIONS = ("queries_first", "query_windows", "lambdas_first", "row_windows", "conv")
IMPLEMENTATIONS = ("auto",) + FORMULATIONS
# Values of `implementation` from earlier releases, mapped when a layer (or an old config) is
# created. "einsum" meant "never the convolution" (for XLA); "auto" now knows about XLA itself.
LEGACY_IMPLEMENTATIONS = {"einsum": "auto"}
# Formulations that need the "local" position mode, and those that need a static size.
LOCAL_ONLY = ("query_windows", "row_windows", "conv")
STATIC_ONLY = ("queries_first", "query_windows", "lambdas_first", "row_windows")
