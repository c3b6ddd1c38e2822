"""3D convolutional capsules with routing by agreement (Keras 3, any backend).

Capsule tensors are channels-last and 6D: ``(batch, z, y, x, types, atoms)``.
A capsule's length (the norm over its atoms) says how present its entity is;
its direction says how the entity looks.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

EPSILON = 1e-7
# Most bytes of votes one routing pass holds at once. A layer whose votes exceed it (UCaps' first encoder
# layers on a 128³ prediction tile hold 2.1 GB of votes, and as much again in the routing layout) computes
# its votes and routes them one slab of output z rows at a time: the same arithmetic per voxel, a fraction
# of the memory. Training patches (32³, batch 4: 134 MB) stay below it and run in one piece.
VOTE_SLAB_BYTES = 256 * 2**20


def squash(vectors, axis: int = -1):
    """Shrink vectors to a length below 1, keeping their direction.

    ``squash(s) = s / ‖s‖ · ‖s‖² / (1 + ‖s‖²)``, with ‖s‖ taken over ``axis``.
    Computed in float32 (safe under mixed precision) and epsilon-safe at s = 0;
    the result has the input's dtype.
    """
    dtype = vectors.dtype
    vectors = ops.cast(vectors, "float32")
    norm2 = ops.sum(ops.square(vectors), axis=axis, keepdims=True)
    scale = norm2 / (1.0 + norm2) / ops.sqrt(norm2 + EPSILON)
    return ops.cast(vectors * scale, dtype)


@keras.saving.register_keras_serializable(package="keras_ucaps")
class ConvCapsule3D(keras.layers.Layer):
    """A 3D convolutional capsule layer with dynamic routing.

    Every input capsule votes for every output capsule type through one
    Conv3D shared by all input types (input types folded into the batch
    axis), mapping its ``in_atoms`` to ``num_types × num_atoms``. Routing by
    agreement then mixes the votes: logits start at 0; the coupling is a
    softmax over output types; ``s = Σ_inputs coupling · votes + bias``;
    the output is ``squash(s)``; between iterations the logits grow by the
    dot product of each vote with the output.

    The vote tensor is laid out (batch·voxels, out types, in types, atoms) so
    that both routing sums are batched matrix products: the only full copy of
    the votes is the one transpose after the convolution. Routing is
    independent per output voxel, so when the input's shape is known and its
    votes would exceed ``VOTE_SLAB_BYTES``, votes and routing run one slab of
    output z rows at a time (each slab convolved from its own rows of the
    zero-padded input): the same result in a fraction of the memory.

    Args:
        num_types: int. Number of output capsule types.
        num_atoms: int. Atoms (vector length) of each output capsule.
        kernel_size: int. Size of the cubic vote kernel.
        strides: int. Stride of the vote convolution.
        dilation_rate: int. Dilation of the vote convolution.
        routings: int. Routing iterations (1 = plain voting).
        kernel_initializer, bias_initializer: initializers of the vote
            convolution's kernel and bias.
        capsule_bias_initializer: initializer of the per-type, per-atom bias
            added before squashing (0.1 by default, as in the reference).
        **kwargs: standard Layer arguments (name, dtype, ...).

    Input shape: ``(batch, z, y, x, in_types, in_atoms)``.
    Output shape: ``(batch, z', y', x', num_types, num_atoms)`` with "same"
    padding, so z' = ceil(z / strides).

    Example:
    >>> x = keras.random.normal((1, 8, 8, 8, 2, 4))
    >>> ConvCapsule3D(num_types=3, num_atoms=8, strides=2)(x).shape
    (1, 4, 4, 4, 3, 8)

    Reference:
        Sabour, Frosst & Hinton, "Dynamic Routing Between Capsules", NeurIPS 2017;
        LaLonde & Bagci, "Capsules for Object Segmentation" (SegCaps), 2018;
        Nguyen et al., "3D-UCaps", MICCAI 2021; Hajarolasvadi et al., BMC
        Bioinformatics 2022.
    """

    def __init__(
        self,
        num_types: int,
        num_atoms: int,
        kernel_size: int = 3,
        strides: int = 1,
        dilation_rate: int = 1,
        routings: int = 3,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        capsule_bias_initializer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_types = int(num_types)
        self.num_atoms = int(num_atoms)
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        self.dilation_rate = int(dilation_rate)
        self.routings = int(routings)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.capsule_bias_initializer = keras.initializers.get(
            capsule_bias_initializer or keras.initializers.Constant(0.1)
        )
        if self.routings < 1:
            raise ValueError(f"routings must be at least 1, got {routings}")

    def build(self, input_shape):
        if len(input_shape) != 6:
            raise ValueError(f"ConvCapsule3D expects (batch, z, y, x, types, atoms), got {input_shape}")
        in_types, in_atoms = input_shape[-2], input_shape[-1]
        kernel_initializer = self.kernel_initializer
        if isinstance(kernel_initializer, UnitLengthVotes):
            kernel_initializer = kernel_initializer.for_layer(
                in_types=in_types, in_atoms=in_atoms, out_types=self.num_types, out_atoms=self.num_atoms,
                kernel_voxels=self.kernel_size**3)
        self.vote_conv = keras.layers.Conv3D(
            self.num_types * self.num_atoms,
            self.kernel_size,
            strides=self.strides,
            padding="same",
            dilation_rate=self.dilation_rate,
            kernel_initializer=kernel_initializer,
            bias_initializer=self.bias_initializer,
            dtype=self.dtype_policy,
            name="votes",
        )
        self.vote_conv.build((None, None, None, None, in_atoms))
        self.capsule_bias = self.add_weight(
            name="capsule_bias",
            shape=(self.num_types, self.num_atoms),
            initializer=self.capsule_bias_initializer,
        )

    def call(self, inputs):
        rows = self.slab_rows(inputs.shape)
        if rows is None:
            return self._route_votes(inputs, self.vote_conv)
        return self._call_in_slabs(inputs, rows)

    def slab_rows(self, input_shape) -> int | None:
        """Output z rows per slab, or None when the votes fit in ``VOTE_SLAB_BYTES`` (or the spatial shape is
        not known until run time) and the layer runs in one piece. An unknown batch (a SavedModel's signature)
        counts as one: slabs hold any batch, their memory grows with it."""
        if any(n is None for n in input_shape[1:5]):
            return None
        batch = 1 if input_shape[0] is None else int(input_shape[0])
        z, y, x, in_types = (int(n) for n in input_shape[1:5])
        out_z, out_y, out_x = (-(-n // self.strides) for n in (z, y, x))
        itemsize = int("".join(c for c in keras.backend.standardize_dtype(self.compute_dtype) if c.isdigit())) // 8
        row_bytes = batch * in_types * out_y * out_x * self.num_types * self.num_atoms * itemsize
        if row_bytes * out_z <= VOTE_SLAB_BYTES:
            return None
        return max(1, VOTE_SLAB_BYTES // row_bytes)

    def _call_in_slabs(self, inputs, rows: int):
        # TensorFlow's "same" padding made explicit (the extra voxel after), then each slab of output rows
        # is a "valid" convolution of the padded input rows it sees.
        span = (self.kernel_size - 1) * self.dilation_rate + 1
        pads = []
        for n in inputs.shape[1:4]:
            total = max((-(-int(n) // self.strides) - 1) * self.strides + span - int(n), 0)
            pads.append((total // 2, total - total // 2))
        padded = ops.pad(inputs, [(0, 0), *pads, (0, 0), (0, 0)])
        out_z = -(-int(inputs.shape[1]) // self.strides)

        def convolve(folded):
            votes = ops.conv(folded, self.vote_conv.kernel, strides=self.strides, padding="valid",
                             dilation_rate=self.dilation_rate)
            return votes + self.vote_conv.bias

        slabs = []
        for start in range(0, out_z, rows):
            stop = min(out_z, start + rows)
            piece = padded[:, start * self.strides:(stop - 1) * self.strides + span]
            slabs.append(self._route_votes(piece, convolve))
        return ops.concatenate(slabs, axis=1)

    def _route_votes(self, inputs, convolve):
        shape = ops.shape(inputs)
        batch, in_types, in_atoms = shape[0], shape[4], shape[5]
        # (b, z, y, x, i, a) -> (b·i, z, y, x, a): input types become batch entries.
        folded = ops.reshape(ops.transpose(inputs, (0, 4, 1, 2, 3, 5)), (-1, shape[1], shape[2], shape[3], in_atoms))
        votes = convolve(folded)  # (b·i, z', y', x', o·a)
        out_shape = ops.shape(votes)
        spatial = (out_shape[1], out_shape[2], out_shape[3])
        voxels = out_shape[1] * out_shape[2] * out_shape[3]
        bias = ops.cast(self.capsule_bias, votes.dtype)
        if self.routings == 1:
            # One iteration couples every input type to every output type by 1 / output types: the input types'
            # votes are summed where the convolution left them, without the routing layout's transpose.
            votes = ops.reshape(votes, (batch, in_types, *spatial, self.num_types, self.num_atoms))
            weighted = ops.sum(votes, axis=1) * ops.cast(1.0 / self.num_types, votes.dtype)
            return squash(weighted + bias)
        votes = ops.reshape(votes, (batch, in_types, voxels, self.num_types, self.num_atoms))
        votes = ops.reshape(ops.transpose(votes, (0, 2, 3, 1, 4)), (-1, self.num_types, in_types, self.num_atoms))
        outputs = route(votes, bias, self.routings)  # (n, o, a)
        return ops.reshape(outputs, (batch, *spatial, self.num_types, self.num_atoms))

    def compute_output_shape(self, input_shape):
        def out(n):
            return None if n is None else -(-n // self.strides)

        return (input_shape[0], *(out(n) for n in input_shape[1:4]), self.num_types, self.num_atoms)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_types=self.num_types,
            num_atoms=self.num_atoms,
            kernel_size=self.kernel_size,
            strides=self.strides,
            dilation_rate=self.dilation_rate,
            routings=self.routings,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
            capsule_bias_initializer=keras.initializers.serialize(self.capsule_bias_initializer),
        )
        return config


@keras.saving.register_keras_serializable(package="keras_ucaps")
class UnitLengthVotes(keras.initializers.Initializer):
    """Vote kernels drawn so that each new capsule's input-dependent part has about unit length.

    With Glorot's initialisation (the reference's), the first routing iteration's uniform coupling
    (1 / output types) and squash's quadratic fall near zero leave every capsule layer dominated by its
    0.1 bias: measured on a 32³ patch, the capsules' variation over space is 1-14 % of their length in the
    encoder, so the encoder passes little of the image on, and Adam, which moves a weight by about the
    learning rate per step, needs thousands of steps to grow the vote kernels ~20× out of that regime.
    Here the kernel's standard deviation is

        target · out_types / (sqrt(out_atoms · in_types · kernel_voxels · in_atoms) · input_atom_std)

    so that Σ_i (1 / out_types) · votes has a standard deviation of target / sqrt(out_atoms) per atom.

    Args:
        input_atom_std: float, optional. Standard deviation of one input atom; default that of squashed
            input capsules of length 0.5: 0.5 / sqrt(in_atoms).
        target: float. Length of the input-dependent part of a capsule before squash.
        seed: int, optional.
    """

    def __init__(self, input_atom_std: float | None = None, target: float = 1.0, seed=None):
        self.input_atom_std = None if input_atom_std is None else float(input_atom_std)
        self.target = float(target)
        self.seed = seed

    def stddev(self, *, in_types, in_atoms, out_types, out_atoms, kernel_voxels) -> float:
        atom_std = self.input_atom_std if self.input_atom_std is not None else 0.5 / np.sqrt(in_atoms)
        return float(self.target * out_types / (np.sqrt(out_atoms * in_types * kernel_voxels * in_atoms) * atom_std))

    def for_layer(self, **shape) -> keras.initializers.Initializer:
        return keras.initializers.RandomNormal(stddev=self.stddev(**shape), seed=self.seed)

    def __call__(self, shape, dtype=None):
        raise TypeError("UnitLengthVotes initialises ConvCapsule3D's vote kernels only (it needs the capsule shapes)")

    def get_config(self):
        return {"input_atom_std": self.input_atom_std, "target": self.target, "seed": self.seed}


def route(votes, bias, routings: int):
    """Routing by agreement.

    Args:
        votes: (n, out_types, in_types, atoms), n = batch × voxels.
        bias: (out_types, atoms).
        routings: number of iterations.

    Returns:
        (n, out_types, atoms): the squashed output capsules.
    """
    n, out_types, in_types = ops.shape(votes)[0], ops.shape(votes)[1], ops.shape(votes)[2]
    logits = ops.zeros((n, out_types, in_types), dtype="float32")
    outputs = None
    for iteration in range(routings):
        # Softmax over output types, on a rank-3 tensor (oneDNN refuses rank >= 6).
        coupling = ops.cast(ops.softmax(logits, axis=1), votes.dtype)
        # s[n, o, a] = Σ_i coupling[n, o, i] · votes[n, o, i, a]: a batched (1 × i) @ (i × a) product.
        weighted = ops.squeeze(ops.matmul(ops.expand_dims(coupling, 2), votes), 2)
        outputs = squash(weighted + bias)
        if iteration < routings - 1:
            # agreement[n, o, i] = Σ_a votes[n, o, i, a] · outputs[n, o, a]: (i × a) @ (a × 1).
            agreement = ops.squeeze(ops.matmul(votes, ops.expand_dims(outputs, 3)), 3)
            logits = logits + ops.cast(agreement, "float32")
    return outputs


@keras.saving.register_keras_serializable(package="keras_ucaps")
class CapsuleLength(keras.layers.Layer):
    """Length of each capsule: ``(..., types, atoms) -> (..., types)``, in float32.

    Example:
    >>> CapsuleLength()(keras.ops.ones((1, 2, 2, 2, 3, 4))).shape
    (1, 2, 2, 2, 3)
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def call(self, inputs):
        inputs = ops.cast(inputs, "float32")
        return ops.sqrt(ops.sum(ops.square(inputs), axis=-1) + EPSILON)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1])


@keras.saving.register_keras_serializable(package="keras_ucaps")
class FlattenCapsules(keras.layers.Layer):
    """``(batch, z, y, x, types, atoms) -> (batch, z, y, x, types·atoms)`` channels.

    Example:
    >>> FlattenCapsules()(keras.ops.ones((1, 2, 2, 2, 3, 4))).shape
    (1, 2, 2, 2, 12)
    """

    def call(self, inputs):
        shape = ops.shape(inputs)
        return ops.reshape(inputs, (shape[0], shape[1], shape[2], shape[3], shape[4] * shape[5]))

    def compute_output_shape(self, input_shape):
        channels = None if None in input_shape[-2:] else input_shape[-2] * input_shape[-1]
        return (*input_shape[:4], channels)


@keras.saving.register_keras_serializable(package="keras_ucaps")
class ChannelsToCapsule(keras.layers.Layer):
    """``(batch, z, y, x, channels) -> (batch, z, y, x, 1, channels)``: one capsule type
    whose atoms are the feature channels.

    Example:
    >>> ChannelsToCapsule()(keras.ops.ones((1, 2, 2, 2, 64))).shape
    (1, 2, 2, 2, 1, 64)
    """

    def call(self, inputs):
        return ops.expand_dims(inputs, -2)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 1, input_shape[-1])
