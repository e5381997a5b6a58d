//! Reductions over a cube's units, inside the row-wise kernels.

use burn_cubecl::cubecl::{self, prelude::*};

/// The sum (or with `maximum`, the maximum) of every unit's `value` in the cube, in every
/// unit. `shared` holds one value per unit; the cube has a power-of-two number of units.
#[cube]
fn cube_reduce(value: f32, shared: &mut Shared<[f32]>, #[comptime] maximum: bool) -> f32 {
    shared[UNIT_POS as usize] = value;
    sync_cube();
    let mut active = CUBE_DIM / 2;
    while active > 0 {
        if UNIT_POS < active {
            let mine = shared[UNIT_POS as usize];
            let other = shared[(UNIT_POS + active) as usize];
            shared[UNIT_POS as usize] = if maximum {
                max(mine, other)
            } else {
                mine + other
            };
        }
        sync_cube();
        active /= 2;
    }
    let result = shared[0];
    // Every unit reads the result before the next reduction overwrites it.
    sync_cube();
    result
}

#[cube]
pub fn cube_sum(value: f32, shared: &mut Shared<[f32]>) -> f32 {
    cube_reduce(value, shared, false)
}

#[cube]
pub fn cube_max(value: f32, shared: &mut Shared<[f32]>) -> f32 {
    cube_reduce(value, shared, true)
}
