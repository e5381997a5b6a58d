//! Host code the kernels share: launch geometry, new tensors, and the column sums that make
//! the gradient of a vector added to every row.

use burn::backend::Cube;
use burn::backend::autodiff::{NodeId, grads::Gradients};
use burn::backend::ops::FloatTensorOps;
use burn::tensor::{Shape, Slice};
use burn_cubecl::cubecl::{CubeCount, CubeDim, calculate_cube_count_elemwise};
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;

/// The most units in a cube, one cube per row: a power of two, for the tree reductions.
pub const UNITS: u32 = 128;

/// A new contiguous tensor of `like`'s shape and float type.
pub fn empty_like(like: &CubeTensor) -> CubeTensor {
    empty_device_dtype(
        like.client.clone(),
        like.device.clone(),
        like.meta.shape().clone(),
        like.dtype,
    )
}

/// A new contiguous tensor of `shape` in `like`'s float type, on its device.
pub fn empty<const D: usize>(like: &CubeTensor, shape: [usize; D]) -> CubeTensor {
    empty_device_dtype(
        like.client.clone(),
        like.device.clone(),
        Shape::new(shape),
        like.dtype,
    )
}

/// The sum over every row of `tensor`, whose last axis is the row, as `[width]`: the gradient
/// of a vector (gamma, beta, a bias) added to every row.
pub fn column_sums(tensor: CubeTensor) -> CubeTensor {
    let shape = tensor.meta.shape().clone();
    let width = shape[shape.num_dims() - 1];
    let rows = tensor.meta.num_elements() / width;
    let [sums] = block_column_sums(Cube::float_reshape(tensor, Shape::new([1, rows, width])));
    sums
}

/// The column sums of each block of `blocks`, `[N, rows, width]`, in one reduction: the
/// gradients of N vectors added to every row, as `[width]` each.
pub fn block_column_sums<const N: usize>(blocks: CubeTensor) -> [CubeTensor; N] {
    let width = blocks.meta.shape()[2];
    let sums = Cube::float_reshape(Cube::float_sum_dim(blocks, 1), Shape::new([N, width]));
    std::array::from_fn(|k| {
        Cube::float_reshape(
            Cube::float_slice(sums.clone(), &block(k)),
            Shape::new([width]),
        )
    })
}

/// The slice of block `k` along the first axis (a view where the offset is aligned).
pub fn block(k: usize) -> [Slice; 1] {
    [Slice::new(k as isize, Some(k as isize + 1), 1)]
}

/// Registers `grad`, the gradient of an input to which a bias was added along its rows, for
/// that input (when it tracks one), and its column sums for the bias.
pub fn register_biased(
    grads: &mut Gradients,
    [input, bias]: [Option<NodeId>; 2],
    grad: CubeTensor,
) {
    if let Some(bias) = bias {
        grads.register::<Cube>(bias, column_sums(grad.clone()));
    }
    if let Some(input) = input {
        grads.register::<Cube>(input, grad);
    }
}

/// One unit per element of `tensor`.
pub fn elementwise_launch(tensor: &CubeTensor) -> (CubeDim, CubeCount) {
    let elements = tensor.meta.num_elements();
    let cube_dim = CubeDim::new(&tensor.client, elements);
    let count = calculate_cube_count_elemwise(&tensor.client, elements, cube_dim);
    (cube_dim, count)
}

/// One cube per row of `rows`, of `width` elements each: as many units as the row has
/// elements, rounded up to a power of two, from a plane of 32 up to [`UNITS`].
pub fn row_launch(tensor: &CubeTensor, rows: usize, width: usize) -> (CubeDim, CubeCount) {
    let units = (width.next_power_of_two() as u32).clamp(32, UNITS);
    let cube_dim = CubeDim::new_1d(units);
    let count = calculate_cube_count_elemwise(&tensor.client, rows * units as usize, cube_dim);
    (cube_dim, count)
}
