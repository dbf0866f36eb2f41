"""Lambda layers (keras.ops only: TensorFlow, JAX and PyTorch backends).

- `lambda_layer`: `LambdaLayer`, the paper's equations for channels-last images;
- `formulations`: the five formulations of its position term as pure functions, the rule
  (`formulations.choose`) that picks one for the shape and the runtime, and `autotune`, which
  measures them where a model runs;
- `sequence`: `SequenceLambdaLayer`, the same equations for sequences (batch, n, d), a separate
  context, causal and padding masks.
- `shared`: what both layers share: hyper-parameter checks, projections and norms, the content
  term.
"""

from lambda_keras.layers import formulations
from lambda_keras.layers.formulations import IMPLEMENTATIONS, autotune, relative_offsets
from lambda_keras.layers.lambda_layer import POOL_SIZES, POSITION_MODES, LambdaLayer
from lambda_keras.layers.sequence import SEQUENCE_POSITION_MODES, SequenceLambdaLayer

__all__ = ["LambdaLayer", "IMPLEMENTATIONS", "autotune", "POSITION_MODES", "POOL_SIZES",
           "formulations", "relative_offsets", "SequenceLambdaLayer", "SEQUENCE_POSITION_MODES"]
