//! The sum of a flat buffer over the processes of a run, one per CUDA GPU, by NCCL, device to
//! device, as PyTorch's DDP sums its gradients: [`Nccl`].
//!
//! CubeCL has NCCL collectives too, but between the devices of one process: it makes each
//! communicator's id itself, in the process, where one of several processes must make it and
//! send it to the others. So this joins NCCL directly through cudarc (the bindings cubecl-cuda
//! loads), as NCCL's own multi-process examples do, and runs it on the memory of a Burn tensor.

use burn::backend::{Cube, DispatchDevice};
use burn::tensor::{DType, Device, Tensor};
use burn_cubecl::cubecl;
use burn_cubecl::kernel::into_contiguous;
use cubecl_cuda::CudaRuntime;
use cubecl_runtime::runtime::Runtime;
use cudarc::driver::result as driver;
use cudarc::nccl::{result as nccl, sys};

/// A rank's place in an NCCL communicator on its GPU, which sums buffers over the ranks.
pub struct Nccl {
    communicator: sys::ncclComm_t,
    stream: cudarc::driver::sys::CUstream,
    context: cudarc::driver::sys::CUcontext,
    gpu: usize,
}

// SAFETY: an NCCL communicator and a CUDA stream may be used from any thread, one call at a
// time; `sum` takes `&self` but its callers (the ranks' MPI thread) call it from one thread.
unsafe impl Send for Nccl {}
unsafe impl Sync for Nccl {}

/// The index of `device`'s GPU when it is a CUDA device (with or without autodiff).
pub fn cuda_gpu(device: &Device) -> Option<usize> {
    match device.clone().without_autodiff().as_dispatch() {
        DispatchDevice::Cube(cubecl::Device::Cuda(gpu)) => Some(gpu.index),
        _ => None,
    }
}

/// A new communicator's id, made on one rank and sent to the others.
pub fn unique_id() -> Result<Vec<u8>, String> {
    // SAFETY: only asks the dynamic loader whether the library is there.
    if !unsafe { sys::is_culib_present() } {
        return Err(
            "NCCL's library (libnccl.so.2) was not found: install NCCL (Debian: \
                    libnccl2; pip: nvidia-nccl-cu13) and put its directory on LD_LIBRARY_PATH"
                .into(),
        );
    }
    let id = nccl::get_uniqueid().map_err(|e| format!("NCCL could not make an id: {e:?}"))?;
    Ok(id.internal.iter().map(|&byte| byte as u8).collect())
}

impl Nccl {
    /// Joins, as rank `rank` of `world`, the communicator whose id rank 0 made with
    /// [`unique_id`], on `device`'s GPU. Every rank calls it at once: it returns when all
    /// have joined.
    pub fn join(id: &[u8], world: usize, rank: usize, device: &Device) -> Result<Self, String> {
        let gpu = cuda_gpu(device).ok_or("NCCL sums tensors on CUDA devices only")?;
        let mut unique = sys::ncclUniqueId { internal: [0; 128] };
        if id.len() != unique.internal.len() {
            return Err(format!("an NCCL id is 128 bytes, not {}", id.len()));
        }
        for (to, &from) in unique.internal.iter_mut().zip(id) {
            *to = from as _;
        }
        let context = current_context(gpu)?;
        let stream = driver::stream::create(driver::stream::StreamKind::NonBlocking)
            .map_err(|e| format!("CUDA could not make a stream for NCCL: {e}"))?;
        let mut communicator = std::mem::MaybeUninit::uninit();
        // SAFETY: `communicator` is written by a successful call, which `assume_init` follows;
        // the GPU's context is current on this thread, as NCCL takes its device from it.
        let communicator = unsafe {
            nccl::comm_init_rank(communicator.as_mut_ptr(), world as i32, unique, rank as i32)
                .map_err(|e| format!("NCCL could not join rank {rank} of {world}: {e:?}"))?;
            communicator.assume_init()
        };
        Ok(Self {
            communicator,
            stream,
            context,
            gpu,
        })
    }

    /// `flat` summed over the ranks, in place, on its GPU. Every rank calls it at once, with
    /// as many elements.
    ///
    /// # Shapes
    ///
    /// `flat` `[n]`, f32, on the GPU the communicator joined on; the output is `flat`.
    pub fn sum(&self, flat: Tensor<1>) -> Result<Tensor<1>, String> {
        if cuda_gpu(&flat.device()) != Some(self.gpu) {
            return Err(format!(
                "NCCL joined on GPU {} sums tensors there only",
                self.gpu
            ));
        }
        let device = flat.device();
        let tensor = flat
            .try_into_primitive::<Cube>()
            .map_err(|_| "NCCL sums tensors of CubeCL's CUDA backend only")?;
        if tensor.dtype != DType::F32 {
            return Err(format!(
                "NCCL sums f32 buffers here, not {:?}",
                tensor.dtype
            ));
        }
        // Contiguous, and this function's alone: it writes into it.
        let tensor = into_contiguous(tensor);
        let tensor = match tensor.can_mut() {
            true => tensor,
            false => tensor.copy(),
        };
        let count = tensor.meta.num_elements();
        let resource = tensor
            .client
            .get_resource::<<CudaRuntime as Runtime>::Server>(tensor.handle.clone())
            .map_err(|e| format!("CUDA memory of the buffer to sum: {e:?}"))?;
        let pointer = resource.resource().ptr;
        // NCCL's stream must not start before the kernels that wrote the buffer have finished,
        // nor Burn's read the sum before it is there: wait for both on the host.
        device
            .sync()
            .map_err(|e| format!("CUDA failed before the gradients' all-reduce: {e:?}"))?;
        // SAFETY: `pointer` is `count` f32 of live device memory (the tensor, held until
        // the stream is synchronised); the communicator was joined on this GPU, whose context
        // is made current.
        unsafe {
            driver::ctx::set_current(self.context).map_err(|e| format!("CUDA context: {e}"))?;
            nccl::all_reduce(
                pointer as *const _,
                pointer as *mut _,
                count,
                sys::ncclDataType_t::ncclFloat32,
                sys::ncclRedOp_t::ncclSum,
                self.communicator,
                self.stream as _,
            )
            .map_err(|e| format!("NCCL's all-reduce failed: {e:?}"))?;
            driver::stream::synchronize(self.stream)
                .map_err(|e| format!("NCCL's all-reduce failed on the GPU: {e}"))?;
        }
        drop(resource);
        Ok(Tensor::from_primitive::<Cube>(tensor))
    }
}

/// Makes GPU `gpu`'s primary context, the one cubecl-cuda works in, current on this thread.
fn current_context(gpu: usize) -> Result<cudarc::driver::sys::CUcontext, String> {
    let fail = |e: cudarc::driver::DriverError| format!("CUDA GPU {gpu}: {e}");
    driver::init().map_err(fail)?;
    let cu_device = driver::device::get(gpu as i32).map_err(fail)?;
    // SAFETY: `cu_device` is a device CUDA listed; retaining its primary context again only
    // counts one more user of it.
    unsafe {
        let context = driver::primary_ctx::retain(cu_device).map_err(fail)?;
        driver::ctx::set_current(context).map_err(fail)?;
        Ok(context)
    }
}
