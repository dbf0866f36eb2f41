"""Training recipes as data: one frozen `Recipe` row per setting, `get_recipe`, the table listing.

Rows (`RECIPES`):
- `paper-<depth>-<size>`: the ResNet-RS recipe the paper trains its LambdaResNets with (recalled,
  UNCONFIRMED; below), one row per
  (depth, image size) of tensorflow/tpu's `models/official/resnet/resnet_rs/configs/*.yaml`
  (read in that code): 350 epochs at batch 4096, SGD with Nesterov momentum 0.9, LR 0.1 per 256,
  L2 weight decay 4e-5 through the momentum, label smoothing 0.1, EMA 0.9999, RandAugment 2 layers
  at magnitude 10 (50@160, 101@160) or 15 (all others), dropout 0.25 (0.4 at 320 px) and
  stochastic depth 0.1 from depth 200 (none below).
- `paper-imagenet`: those settings without a (depth, size): RandAugment magnitude 15 (the configs'
  usual value), dropout / stochastic depth / image size from the architecture (architectures.py).
- `paper-ablation-90`: the shorter recipe of the paper's ResNet-50 ablation tables (PAPER.md
  section 4, recalled, UNCONFIRMED): 90 epochs, batch 4096, SGD Nesterov 0.9, LR 0.1 per 256 with 5
  warm-up epochs then cosine, L2 weight decay 1e-4, label smoothing 0.1. NOTE: PAPER.md gives no
  augmentation or EMA for the ablations; no EMA and no RandAugment (crop + flip) are this
  package's choice, the plainest reading of "the standard recipe".
- `finetune`, `scratch`: this project's transfer-learning and small-data recipes (AdamW).

How each number is known: the ResNet-RS rows are read from the reference configs (they are what the
ResNet-RS code trains with; that the LambdaNetworks paper used exactly these is recalled, PAPER.md
section 4, UNCONFIRMED). The 90-epoch ablation recipe is recalled, UNCONFIRMED.

NOTE: the configs are read by tensorflow/tpu's `resnet_main.py`, whose schedule is a 5/90-scaled
linear warm-up then step decay at 30/60/80 of 90 scaled epochs; the ResNet-RS paper names cosine
decay among its training improvements (recalled), so the rows use a 5-epoch warm-up then cosine.
NOTE: the configs set `bn_momentum: 0` with `moving_average_decay: 0.9999` (batch statistics of
the EMA'd model); the architectures here keep their own BN momentum.
"""

import ast
import dataclasses

from lambda_keras import utils
from lambda_keras.data import AUGMENTS, RANDAUGMENT_MAX_MAGNITUDE

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "constant")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A training recipe. Every field can be overridden: `get_recipe(name, field=value)`.

    Frozen; every field is checked when the recipe is made (`dataclasses.replace` included).

    Args:
        name: the recipe's name (a key of `RECIPES` for the registered ones).
        description: one line on what the recipe is and where its numbers come from.
        epochs: epochs of the run, >= 1.
        batch_size: global batch, over all replicas and workers, >= 1.
        optimizer: "sgd" (momentum, Nesterov: `MomentumL2`) or "adamw".
        base_learning_rate: peak learning rate for a global batch of 256, scaled linearly
            (`peak_learning_rate`); > 0.
        learning_rate: peak learning rate as given, not scaled (overrides the above); None.
        momentum: SGD momentum / AdamW beta_1, in [0, 1).
        nesterov: Nesterov momentum (SGD).
        weight_decay: in [0, 1). SGD: coupled L2, loss + wd * sum(w^2) / 2 over non-BN weights,
            through the momentum (ResNet-RS); AdamW: decoupled, w -= lr * wd * w (BN and
            biases excluded).
        schedule: "cosine" (to zero at the end) or "constant", after the warm-up.
        warmup_epochs: epochs of linear warm-up from zero, >= 0.
        label_smoothing: in [0, 1).
        ema_momentum: momentum of an exponential moving average of the weights, in (0, 1);
            None: off.
        augment: training augmentation (`data.AUGMENTS`): "imagenet", "randaugment" or None.
        randaugment_layers: RandAugment's N, >= 1.
        randaugment_magnitude: RandAugment's M on tensorflow/tpu's scale (ops scale with
            M / 10), in [0, 30].
        mixup_alpha: MixUp's Beta parameter, >= 0 (0: off).
        cutmix_alpha: CutMix strength in [0, 1] (0: off).
        drop_rate: classifier dropout in [0, 1); None: the architecture's.
        drop_path_rate: stochastic depth in [0, 1); None: the architecture's.
        image_size: training image side, >= 32; None: the weights' or the architecture's.
        depth: the ResNet depth a paper row is for (listing only); None.
        precision: one of `PRECISIONS`; "auto": mixed_bfloat16 on TPU, float32 elsewhere.
        freeze_batch_norm: BN in inference mode with frozen statistics.
        freeze_backbone_epochs: first train only the classifier for this many epochs (fewer
            than `epochs`).
        sync_batch_norm: batch statistics over all replicas.
        steps_per_execution: steps per compiled call (e.g. 32 on TPU), >= 1.
        backup_every: steps between backups (also at every epoch end); a multiple of
            `steps_per_execution`.

    Raises:
        TypeError: a field of the wrong type (a float `epochs`, a str `nesterov`, a bool
            number), named with its value.
        ValueError: a field out of range or not one of its choices, a `freeze_backbone_epochs`
            not below `epochs`, or a `backup_every` that is not a multiple of
            `steps_per_execution`.

    Example:

    >>> recipe = Recipe(name="short", description="3 epochs of AdamW", epochs=3,
    ...                 batch_size=32, optimizer="adamw", base_learning_rate=1e-3)
    >>> recipe.schedule, recipe.label_smoothing, recipe.backup_every
    ('cosine', 0.1, 256)
    """

    name: str
    description: str
    epochs: int
    batch_size: int  # global batch, over all replicas and workers
    optimizer: str  # "sgd" (momentum, Nesterov) or "adamw"
    base_learning_rate: float  # peak LR for a global batch of 256; scaled linearly
    learning_rate: float = None  # peak LR as given, not scaled (overrides the above)
    momentum: float = 0.9  # SGD momentum / AdamW beta_1
    nesterov: bool = True
    # SGD: coupled L2, loss + wd * sum(w^2) / 2 over non-BN weights, through the momentum
    # (ResNet-RS); AdamW: decoupled, w -= lr * wd * w (BN and biases excluded).
    weight_decay: float = 0.0
    schedule: str = "cosine"  # "cosine" (to zero at the end) or "constant", after the warm-up
    warmup_epochs: float = 0.0  # linear warm-up from zero
    label_smoothing: float = 0.1
    ema_momentum: float = None  # exponential moving average of the weights; None: off
    augment: str = "imagenet"  # data.AUGMENTS: "imagenet", "randaugment" or None
    randaugment_layers: int = 2
    randaugment_magnitude: float = 10  # tensorflow/tpu's level: ops scale with M / 10
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    drop_rate: float = None  # classifier dropout; None: the architecture's
    drop_path_rate: float = None  # stochastic depth; None: the architecture's
    image_size: int = None  # None: the weights' or the architecture's size
    depth: int = None  # the ResNet depth a paper row is for (listing only)
    precision: str = "auto"  # PRECISIONS; "auto": mixed_bfloat16 on TPU, float32 elsewhere
    freeze_batch_norm: bool = False  # BN in inference mode with frozen statistics
    freeze_backbone_epochs: int = 0  # first train only the classifier for this many epochs
    sync_batch_norm: bool = False  # batch statistics over all replicas
    steps_per_execution: int = 1  # steps per compiled call (e.g. 32 on TPU)
    # Steps between backups (also at every epoch end); a multiple of steps_per_execution. NOTE:
    # the paper gives no cadence (backups are this package's): powers of two, so that any
    # power-of-two steps_per_execution up to it (32 on a TPU, say) divides it.
    backup_every: int = 256

    def __post_init__(self):
        for name, check in _FIELD_CHECKS.items():
            check(name, getattr(self, name))
        if self.freeze_backbone_epochs >= self.epochs:
            raise ValueError("`freeze_backbone_epochs` must be smaller than `epochs` "
                             f"({self.epochs}). Received: freeze_backbone_epochs="
                             f"{self.freeze_backbone_epochs}")
        if self.backup_every % self.steps_per_execution:
            raise ValueError("`backup_every` must be a multiple of `steps_per_execution` "
                             f"({self.steps_per_execution}). Received: backup_every="
                             f"{self.backup_every}")

    @property
    def summary(self):
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def _number(**bounds):
    return lambda name, value: utils.check_number(name, value, **bounds)


def _choice(choices):
    return lambda name, value: utils.check_choice(name, value, choices)


# field -> check(name, value) raising TypeError/ValueError with the field's name and value
_FIELD_CHECKS = {
    "epochs": lambda n, v: utils.check_int(n, v, low=1),
    "batch_size": lambda n, v: utils.check_int(n, v, low=1),
    "optimizer": _choice(OPTIMIZERS),
    "base_learning_rate": _number(low=0, low_open=True),
    "learning_rate": _number(low=0, low_open=True, optional=True),
    "momentum": _number(low=0, high=1, high_open=True),
    "nesterov": utils.check_bool,
    "weight_decay": _number(low=0, high=1, high_open=True),
    "schedule": _choice(SCHEDULES),
    "warmup_epochs": _number(low=0),
    "label_smoothing": _number(low=0, high=1, high_open=True),
    "ema_momentum": _number(low=0, high=1, low_open=True, high_open=True, optional=True),
    "augment": _choice(AUGMENTS),
    "randaugment_layers": lambda n, v: utils.check_int(n, v, low=1),
    "randaugment_magnitude": _number(low=0, high=RANDAUGMENT_MAX_MAGNITUDE),
    "mixup_alpha": _number(low=0),
    "cutmix_alpha": _number(low=0, high=1),
    "drop_rate": _number(low=0, high=1, high_open=True, optional=True),
    "drop_path_rate": _number(low=0, high=1, high_open=True, optional=True),
    "image_size": lambda n, v: utils.check_int(n, v, low=32, optional=True),
    "depth": lambda n, v: utils.check_int(n, v, low=1, optional=True),
    "precision": _choice(PRECISIONS),
    "freeze_batch_norm": utils.check_bool,
    "freeze_backbone_epochs": lambda n, v: utils.check_int(n, v, low=0),
    "sync_batch_norm": utils.check_bool,
    "steps_per_execution": lambda n, v: utils.check_int(n, v, low=1),
    "backup_every": lambda n, v: utils.check_int(n, v, low=1),
}

# The ResNet-RS configs (tensorflow/tpu models/official/resnet/resnet_rs/configs/, read there):
# (depth, image size) -> (RandAugment magnitude, dropout_rate, drop_connect_rate or 0).
RESNET_RS_ROWS = {
    (50, 160): (10, 0.25, 0.0),
    (101, 160): (10, 0.25, 0.0),
    (101, 192): (15, 0.25, 0.0),
    (152, 192): (15, 0.25, 0.0),
    (152, 224): (15, 0.25, 0.0),
    (152, 256): (15, 0.25, 0.0),
    (200, 256): (15, 0.25, 0.1),
    (270, 256): (15, 0.25, 0.1),
    (350, 256): (15, 0.25, 0.1),
    (350, 320): (15, 0.4, 0.1),
    (420, 320): (15, 0.4, 0.1),
}
# Shared by every ResNet-RS config (read): train_steps 109475 at batch 4096 on 1281167 images is
# 350 epochs; base LR 0.1 per 256; momentum 0.9 (Nesterov in resnet_main.py); weight decay 4e-5
# as an L2 loss over non-BN weights; label smoothing 0.1; EMA 0.9999; RandAugment 2 layers.
_RESNET_RS = dict(
    epochs=350, batch_size=4096, optimizer="sgd", base_learning_rate=0.1, momentum=0.9,
    nesterov=True, weight_decay=4e-5, warmup_epochs=5, label_smoothing=0.1, ema_momentum=0.9999,
    augment="randaugment", randaugment_layers=2, backup_every=1024)


def _resnet_rs_row(depth, size):
    magnitude, dropout, drop_path = RESNET_RS_ROWS[(depth, size)]
    return Recipe(
        name=f"paper-{depth}-{size}",
        description=f"ResNet-RS config resnetrs{depth}_i{size}.yaml (read; that the paper "
                    "trained with it: recalled, UNCONFIRMED): "
                    f"RandAugment 2 x {magnitude}, dropout {dropout}, stochastic depth "
                    f"{drop_path}, {size} px; 350 epochs, batch 4096, SGD Nesterov 0.9, LR 1.6, "
                    "L2 4e-5, EMA 0.9999",
        randaugment_magnitude=magnitude, drop_rate=dropout, drop_path_rate=drop_path,
        image_size=size, depth=depth, **_RESNET_RS)


RECIPES = {r.name: r for r in (
    Recipe(
        name="paper-imagenet",
        description="the ResNet-RS recipe (read; the paper's use of it recalled, UNCONFIRMED) "
                    "without a (depth, size) row: RandAugment 2 x 15; "
                    "dropout, stochastic depth and image size from the architecture",
        randaugment_magnitude=15, **_RESNET_RS),
    *(_resnet_rs_row(depth, size) for depth, size in RESNET_RS_ROWS),
    Recipe(
        name="paper-ablation-90",
        description="the paper's ResNet-50 ablation recipe (recalled, UNCONFIRMED): 90 epochs, "
                    "batch 4096, SGD Nesterov 0.9, LR 1.6, 5 warm-up epochs then cosine, L2 1e-4, "
                    "label smoothing 0.1; crop + flip only (this package's choice)",
        epochs=90, batch_size=4096, optimizer="sgd", base_learning_rate=0.1, weight_decay=1e-4,
        warmup_epochs=5, image_size=224, depth=50, backup_every=1024),
    Recipe(
        name="finetune",
        description="transfer learning from pretrained weights: AdamW, LR 5e-4 per 256, one "
                    "warm-up epoch then cosine, 10 epochs, label smoothing 0.1; options "
                    "freeze_batch_norm and freeze_backbone_epochs",
        epochs=10, batch_size=64, optimizer="adamw", base_learning_rate=5e-4,
        weight_decay=0.05, warmup_epochs=1),
    Recipe(
        name="scratch",
        description="small data from scratch (the offline digits demo): AdamW, LR 4e-3 per 256, "
                    "one warm-up epoch then cosine, 15 epochs, no crop augmentation",
        epochs=15, batch_size=64, optimizer="adamw", base_learning_rate=4e-3,
        weight_decay=0.05, warmup_epochs=1, augment=None),
)}


def get_recipe(name="finetune", **overrides):
    """The recipe `name` of RECIPES (or a `Recipe`) with `overrides` applied to its fields.

    Args:
        name: a RECIPES name ("finetune", "scratch", "paper-imagenet", "paper-50-160", ...;
            `describe_recipes()` lists them) or a `Recipe`.
        **overrides: new values of `Recipe` fields (all but `name` and `description`), checked
            as the recipe's own (`epochs=1`, `batch_size=32`, `precision="mixed_bfloat16"`).

    Returns:
        A new frozen `Recipe` (the registered one is left as it is).

    Raises:
        ValueError: an unknown recipe name or field; a field value out of range (a
            `freeze_backbone_epochs` not below `epochs`, a `backup_every` that is not a
            multiple of `steps_per_execution`).
        TypeError: a field value of the wrong type (a float `epochs`, a str `nesterov`).

    Example:

    >>> recipe = get_recipe("finetune", epochs=3, batch_size=32)
    >>> (recipe.optimizer, recipe.epochs, recipe.batch_size)
    ('adamw', 3, 32)
    """
    if isinstance(name, Recipe):
        recipe = name
    elif name in RECIPES:
        recipe = RECIPES[name]
    else:
        raise ValueError(f"Unknown recipe; valid: {sorted(RECIPES)}. Received: recipe={name!r}")
    fields = [f.name for f in dataclasses.fields(Recipe) if f.name not in ("name", "description")]
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(f"Unknown recipe field(s) {unknown}; valid fields: {fields}. "
                         f"Received: {', '.join(f'{k}={overrides[k]!r}' for k in unknown)}")
    return dataclasses.replace(recipe, **overrides)


def paper_recipe(depth, image_size):
    """The ResNet-RS row for (depth, image_size), e.g. `paper_recipe(152, 256)`.

    Args:
        depth: the LambdaResNet depth (50, 101, 152, 200, 270, 350 or 420).
        image_size: the training image side of a row for that depth (`RESNET_RS_ROWS`).

    Returns:
        The registered `Recipe` "paper-<depth>-<image_size>".

    Raises:
        ValueError: no ResNet-RS row for (depth, image_size); the message lists the rows.

    Example:

    >>> recipe = paper_recipe(152, 256)
    >>> recipe.name, recipe.randaugment_magnitude, recipe.drop_rate, recipe.epochs
    ('paper-152-256', 15, 0.25, 350)
    """
    if (depth, image_size) not in RESNET_RS_ROWS:
        rows = ", ".join(f"({d}, {s})" for d, s in RESNET_RS_ROWS)
        raise ValueError(f"No ResNet-RS row for (depth, image_size); rows: {rows}. "
                         f"Received: depth={depth!r}, image_size={image_size!r}")
    return RECIPES[f"paper-{depth}-{image_size}"]


def describe_recipes():
    """The recipe table as text (what `lambda-keras train --recipe help` prints).

    Returns:
        A str: one row per recipe of `RECIPES` (epochs, batch, optimizer, peak learning rate,
        decay, RandAugment, dropout, drop path, size, EMA), then the recipes' descriptions.

    Example:

    >>> table = describe_recipes()
    >>> next(row for row in table.splitlines() if row.startswith("finetune")).split()[:5]
    ['finetune', '10', '64', 'adamw', '0.000125']
    """
    header = ("recipe", "epochs", "batch", "optimizer", "peak LR", "decay", "RandAug", "dropout",
              "drop path", "size", "EMA")

    def cell(value, default="arch"):
        return (default if value is None
                else f"{value:g}" if isinstance(value, float) else str(value))

    rows = []
    for recipe in RECIPES.values():
        peak = recipe.learning_rate or recipe.base_learning_rate * recipe.batch_size / 256
        kind = "L2" if recipe.optimizer == "sgd" else "decoupled"
        augment = recipe.augment or "none"
        if recipe.augment == "randaugment":
            augment = f"{recipe.randaugment_layers} x {recipe.randaugment_magnitude:g}"
        rows.append((recipe.name, str(recipe.epochs), str(recipe.batch_size), recipe.optimizer,
                     f"{peak:g}", f"{kind} {recipe.weight_decay:g}", augment,
                     cell(recipe.drop_rate), cell(recipe.drop_path_rate),
                     cell(recipe.image_size), cell(recipe.ema_momentum, "-")))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = ["", "arch: the architecture's value (architectures.py). Descriptions:"]
    notes += [f"  {r.name}: {r.description}" for r in RECIPES.values()]
    notes += ["Override any field with --set FIELD=VALUE (python: get_recipe(name, field=value))."]
    return "\n".join(lines + notes)


def parse_recipe_overrides(pairs):
    """Command-line "field=value" strings -> {field: value}, the overrides of `get_recipe`.

    Values are Python literals (3, 0.1, True, None, 'x'); "none", "true", "false" in any case,
    and other bare words (strings), also work. The fields are checked by `get_recipe`.

    Args:
        pairs: an iterable of "field=value" strings (the command line's `--set`).

    Returns:
        A dict {field: value}; a later pair for the same field wins.

    Raises:
        ValueError: a string without "=" or with an empty field name.

    Example:

    >>> parse_recipe_overrides(["epochs=3", "nesterov=false", "precision=mixed_bfloat16"])
    {'epochs': 3, 'nesterov': False, 'precision': 'mixed_bfloat16'}
    """
    overrides = {}
    for pair in pairs:
        field, sep, text = pair.partition("=")
        if not sep or not field.strip():
            raise ValueError(f"A recipe override must look like field=value. Received: {pair!r}")
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            value = {"none": None, "true": True, "false": False}.get(text.strip().lower(), text)
        overrides[field.strip()] = value
    return overrides
