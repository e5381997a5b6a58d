//! Training across processes, one per device, on one machine or several: the processes are
//! started and numbered by an MPI launcher (`mpirun`, `srun --mpi=pmix`), which also does
//! their rendezvous; MPI then sums their gradients and gathers their predictions through host
//! memory. Built with `--features mpi`; without it, or without a launcher, a process is a
//! world of its own and nothing here communicates.
//!
//! MPI belongs to the process (it is initialised once, before anything else talks to it), so
//! the ranks are too: [`init`] once in `main`, then [`ranks`] wherever the loop asks.

use std::sync::OnceLock;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{DType, Device, Tensor, TensorData};

use crate::TrainError;

/// This process's place among the processes of a run.
pub struct Ranks {
    rank: usize,
    world: usize,
    #[cfg(feature = "mpi")]
    mpi: Option<Mpi>,
}

#[cfg(feature = "mpi")]
struct Mpi {
    // Finalises MPI when dropped, at the end of `main`.
    _universe: mpi::environment::Universe,
    world: mpi::topology::SimpleCommunicator,
    local_rank: usize,
    nodes: usize,
    library: String,
    /// The thread that initialised MPI, the only one that may call it (`Threading::Funneled`).
    thread: std::thread::ThreadId,
    /// The ranks' NCCL communicator, once they have joined it on their CUDA GPUs.
    #[cfg(feature = "cuda")]
    nccl: OnceLock<burnbert_kernels::Nccl>,
}

// SAFETY: MPI's handles are raw pointers, which Rust does not share between threads; MPI was
// initialised for one calling thread, and `Mpi::world` checks that every call comes from it.
#[cfg(feature = "mpi")]
unsafe impl Send for Mpi {}
#[cfg(feature = "mpi")]
unsafe impl Sync for Mpi {}

#[cfg(feature = "mpi")]
impl Mpi {
    /// The world communicator, from the thread that initialised MPI.
    fn world(&self) -> &mpi::topology::SimpleCommunicator {
        assert_eq!(
            std::thread::current().id(),
            self.thread,
            "MPI is called from the thread that started it only"
        );
        &self.world
    }
}

static RANKS: OnceLock<Ranks> = OnceLock::new();

/// Joins the run's MPI world when an MPI launcher started this process, else makes it a world
/// of one; call once, at the start of `main`. A launcher without the `mpi` feature is an
/// error: N copies of one training run would write over each other's files.
pub fn init() -> Result<&'static Ranks, TrainError> {
    if let Some(ranks) = RANKS.get() {
        return Ok(ranks);
    }
    let ranks = match launcher_world_size() {
        None | Some(1) => Ranks::single(),
        Some(size) => Ranks::from_mpi(size)?,
    };
    Ok(RANKS.get_or_init(|| ranks))
}

/// The ranks [`init`] joined, or this process alone where it was not called (the tests).
pub fn ranks() -> &'static Ranks {
    RANKS.get_or_init(Ranks::single)
}

/// Where a run's work goes: the run's ranks, this process's place among them, and the
/// devices this process trains on. Worker `w` of the run is device `w % devices` of rank
/// `w / devices`.
#[derive(Clone, Copy)]
pub struct World<'a> {
    pub ranks: &'a Ranks,
    pub devices: &'a [Device],
}

impl<'a> World<'a> {
    /// This process's ranks ([`ranks`]) and `devices`.
    pub fn new(devices: &'a [Device]) -> Self {
        Self {
            ranks: ranks(),
            devices,
        }
    }

    /// Devices on every rank, each running its own share of a step's micro-batches.
    pub fn workers(&self) -> usize {
        self.devices.len() * self.ranks.world()
    }

    /// The run-wide number of this process's first device.
    pub fn first_worker(&self) -> usize {
        self.ranks.rank() * self.devices.len()
    }
}

/// The world size an MPI launcher gives this process in its environment: Open MPI's, the PMI
/// of MPICH's Hydra and Slurm's `srun --mpi=pmi2`, or PMIx's.
fn launcher_world_size() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"]
        .iter()
        .find_map(|name| std::env::var(name).ok()?.parse().ok())
}

impl Ranks {
    fn single() -> Self {
        Self {
            rank: 0,
            world: 1,
            #[cfg(feature = "mpi")]
            mpi: None,
        }
    }

    #[cfg(not(feature = "mpi"))]
    fn from_mpi(size: usize) -> Result<Self, TrainError> {
        Err(TrainError::Options(format!(
            "this process was started by an MPI launcher as one of {size} ranks, but burnbert \
             was built without MPI: build it with `--features mpi` (README, \"Several machines\")"
        )))
    }

    #[cfg(feature = "mpi")]
    fn from_mpi(size: usize) -> Result<Self, TrainError> {
        use mpi::collective::CommunicatorCollectives;
        use mpi::topology::Communicator;
        // Only the main thread calls MPI.
        let (universe, _) =
            mpi::initialize_with_threading(mpi::Threading::Funneled).ok_or_else(|| {
                TrainError::Options(format!(
                    "MPI could not start ({size} ranks expected from the launcher's environment)"
                ))
            })?;
        let world = universe.world();
        let (rank, world_size) = (world.rank() as usize, world.size() as usize);
        let node = world.split_shared(rank as i32);
        let local_rank = node.rank() as usize;
        // One rank per node is its node's first: count them.
        let mut firsts = [0u32];
        world.all_reduce_into(
            &[(local_rank == 0) as u32],
            &mut firsts,
            mpi::collective::SystemOperation::sum(),
        );
        let library = mpi::environment::library_version()
            .map(|v| v.lines().next().unwrap_or_default().trim().to_string())
            .unwrap_or_default();
        Ok(Self {
            rank,
            world: world_size,
            mpi: Some(Mpi {
                _universe: universe,
                world,
                local_rank,
                nodes: firsts[0] as usize,
                library,
                thread: std::thread::current().id(),
                #[cfg(feature = "cuda")]
                nccl: OnceLock::new(),
            }),
        })
    }

    /// This process's rank, from 0.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// How many processes the run has.
    pub fn world(&self) -> usize {
        self.world
    }

    /// Whether this is rank 0, which alone writes the log, the plots, the checkpoints and the
    /// model.
    pub fn is_main(&self) -> bool {
        self.rank == 0
    }

    /// This process's rank among those on its machine: which GPU it takes.
    pub fn local_rank(&self) -> usize {
        #[cfg(feature = "mpi")]
        if let Some(mpi) = &self.mpi {
            return mpi.local_rank;
        }
        0
    }

    /// The world in a line: `2 ranks on 1 node, MPI (Open MPI v4.1.4, ...)`.
    pub fn describe(&self) -> String {
        #[cfg(feature = "mpi")]
        if let Some(mpi) = &self.mpi {
            let s = |n: usize| if n == 1 { "" } else { "s" };
            #[cfg(feature = "cuda")]
            let nccl = mpi.nccl.get().is_some();
            #[cfg(not(feature = "cuda"))]
            let nccl = false;
            let engine = match nccl {
                true => "gradients summed by NCCL on the GPUs",
                false => "gradients summed by MPI through host memory",
            };
            return format!(
                "{} rank{} on {} node{}, {}; {engine}",
                self.world,
                s(self.world),
                mpi.nodes,
                s(mpi.nodes),
                mpi.library
            );
        }
        "1 process".into()
    }

    /// The element-wise sum of every rank's `values`, in place.
    pub fn sum(&self, values: &mut [f32]) {
        #[cfg(feature = "mpi")]
        if let Some(mpi) = &self.mpi {
            use mpi::collective::CommunicatorCollectives;
            let send = values.to_vec();
            mpi.world()
                .all_reduce_into(&send[..], values, mpi::collective::SystemOperation::sum());
        }
        let _ = values;
    }

    /// Whether `flag` is set on any rank.
    pub fn any(&self, flag: bool) -> bool {
        let mut count = [flag as u8 as f32];
        self.sum(&mut count);
        count[0] > 0.0
    }

    /// Rank 0's `bytes`, on every rank.
    pub fn broadcast(&self, bytes: &[u8]) -> Vec<u8> {
        #[cfg(feature = "mpi")]
        if let Some(mpi) = &self.mpi {
            use mpi::collective::Root;
            use mpi::topology::Communicator;
            let root = mpi.world().process_at_rank(0);
            let mut length = [bytes.len() as u64];
            root.broadcast_into(&mut length[..]);
            let mut buffer = bytes.to_vec();
            buffer.resize(length[0] as usize, 0);
            root.broadcast_into(&mut buffer[..]);
            return buffer;
        }
        bytes.to_vec()
    }

    /// Leaves MPI, as every rank must before it exits normally (the launcher takes an exit
    /// without it for a crash). Programs call it last; nothing here works after it.
    pub fn finish(&self) {
        #[cfg(feature = "mpi")]
        if self.mpi.is_some() {
            // SAFETY: MPI was initialised (`from_mpi`) and is finalised once, on the main
            // thread, at the end of the program; the universe in the static is never dropped,
            // so it does not finalise again.
            unsafe {
                mpi::ffi::MPI_Finalize();
            }
        }
    }

    /// Ends every rank's process, with `code`: how a rank's error stops the whole job instead
    /// of leaving the others waiting in their next collective. A world of one just exits.
    pub fn abort(&self, code: i32) -> ! {
        #[cfg(feature = "mpi")]
        if let Some(mpi) = &self.mpi {
            use mpi::topology::Communicator;
            mpi.world().abort(code);
        }
        std::process::exit(code)
    }

    /// The ranks' `grads` summed, on every rank, as one all-reduce of one flat buffer (in
    /// `model`'s parameter order), on the device: NCCL's on CUDA GPUs ([`Ranks::connect`]),
    /// else MPI's through host memory. A parameter that has a gradient on any rank has one
    /// after.
    pub fn sum_gradients<M: Module>(&self, model: &M, grads: GradientsParams) -> GradientsParams {
        if self.world == 1 {
            return grads;
        }
        // Each parameter's gradient in f32 (zeros where this rank has none), flattened, and a 1
        // or 0 saying whether it had one.
        struct Flatten<'a> {
            grads: &'a GradientsParams,
            parts: Vec<Tensor<1>>,
            had: Vec<f32>,
        }
        impl ModuleVisitor for Flatten<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                let n = param.val().shape().num_elements();
                let (part, had) = match self.grads.get::<D>(param.id) {
                    Some(grad) => (grad, 1.0),
                    None => (param.val().inner().zeros_like(), 0.0),
                };
                self.parts.push(part.cast(DType::F32).reshape([n]));
                self.had.push(had);
            }
        }
        struct Unflatten {
            parts: std::vec::IntoIter<Tensor<1>>,
            had: std::vec::IntoIter<f32>,
            grads: GradientsParams,
        }
        impl ModuleVisitor for Unflatten {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                let part = self.parts.next().expect("a part per parameter");
                if self.had.next().is_some_and(|had| had > 0.0) {
                    let value = param.val();
                    self.grads
                        .register::<D>(param.id, part.reshape(value.shape()).cast(value.dtype()));
                }
            }
        }
        let mut flatten = Flatten {
            grads: &grads,
            parts: Vec::new(),
            had: Vec::new(),
        };
        model.visit(&mut flatten);
        let Flatten { parts, mut had, .. } = flatten;
        let sizes: Vec<usize> = parts.iter().map(|part| part.shape()[0]).collect();
        let flat = self.sum_on_device(Tensor::cat(parts, 0));
        self.sum(&mut had);
        let mut unflatten = Unflatten {
            parts: flat.split_with_sizes(sizes, 0).into_iter(),
            had: had.into_iter(),
            grads: GradientsParams::new(),
        };
        model.visit(&mut unflatten);
        unflatten.grads
    }

    /// `flat` summed over the ranks, on its device: by NCCL where the ranks joined it, else by
    /// MPI through host memory. A failure ends the job.
    fn sum_on_device(&self, flat: Tensor<1>) -> Tensor<1> {
        #[cfg(all(feature = "mpi", feature = "cuda"))]
        if let Some(nccl) = self.mpi.as_ref().and_then(|mpi| mpi.nccl.get()) {
            return nccl.sum(flat).unwrap_or_else(|e| {
                eprintln!("error: rank {}: {e}", self.rank);
                self.abort(1)
            });
        }
        let device = flat.device();
        // f32 already (`sum_gradients` casts), so the conversion copies nothing.
        let mut values: Vec<f32> = flat.into_data().convert::<f32>().iter::<f32>().collect();
        self.sum(&mut values);
        let n = values.len();
        Tensor::from_data(TensorData::new(values, [n]), &device)
    }

    /// Readies the gradients' all-reduce for `device`, this rank's (first) training device:
    /// on a CUDA GPU, in a build with `cuda`, every rank joins NCCL with the id that rank 0
    /// makes and sends over MPI, as NCCL's multi-process examples do; elsewhere MPI sums the
    /// gradients through host memory. Every rank calls it at once; later calls do nothing. An
    /// error on one rank ends the job (the programs call [`Ranks::abort`]), so none is left
    /// waiting for the others to join.
    pub fn connect(&self, device: &burn::tensor::Device) -> Result<(), TrainError> {
        #[cfg(all(feature = "mpi", feature = "cuda"))]
        if let Some(mpi) = &self.mpi
            && mpi.nccl.get().is_none()
            && burnbert_kernels::cuda_gpu(device).is_some()
        {
            let fail = |e: String| TrainError::Options(format!("rank {}: {e}", self.rank));
            let id = match self.is_main() {
                true => burnbert_kernels::nccl_unique_id().map_err(fail)?,
                false => Vec::new(),
            };
            let id = self.broadcast(&id);
            let nccl =
                burnbert_kernels::Nccl::join(&id, self.world, self.rank, device).map_err(fail)?;
            let _ = mpi.nccl.set(nccl);
        }
        let _ = device;
        Ok(())
    }

    /// Fails on every rank unless every rank has rank 0's `settings` (flag and value),
    /// naming the first difference; a rank that differs also says so on its standard error.
    pub fn check_same_settings(
        &self,
        settings: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), TrainError> {
        if self.world == 1 {
            return Ok(());
        }
        let mine = serde_json::to_vec(settings).expect("strings serialise");
        let main: std::collections::BTreeMap<String, String> =
            serde_json::from_slice(&self.broadcast(&mine)).expect("rank 0's own settings");
        let difference = settings.iter().find_map(|(flag, value)| {
            let theirs = main.get(flag).map_or("(none)", String::as_str);
            (theirs != value).then(|| {
                format!(
                    "{flag} is {value} on rank {}, {theirs} on rank 0",
                    self.rank
                )
            })
        });
        if let Some(difference) = &difference {
            eprintln!("error: rank {}: {difference}", self.rank);
        }
        match self.any(difference.is_some()) {
            false => Ok(()),
            true => Err(TrainError::Options(format!(
                "the ranks were started with different settings{}; start every rank with the \
                 same flags and data",
                difference.map_or_else(String::new, |d| format!(": {d}"))
            ))),
        }
    }

    /// Fails on every rank unless every rank holds the same weights as rank 0 (compared by
    /// [`weights_hash`] after optimizer step `step`): each applies the same summed gradients,
    /// so a difference is a bug or a broken machine, and training on would train N models.
    pub fn check_same_weights<M: Module>(&self, model: &M, step: usize) -> Result<(), TrainError> {
        if self.world == 1 {
            return Ok(());
        }
        let hash = weights_hash(model);
        let main = self.broadcast(&hash.to_le_bytes());
        let differs = main != hash.to_le_bytes();
        match self.any(differs) {
            false => Ok(()),
            true => Err(TrainError::Options(format!(
                "the ranks' weights differ after optimizer step {step} (rank {} hash \
                 {hash:016x}{}); this should not happen: please report it",
                self.rank,
                if differs { ", not rank 0's" } else { "" }
            ))),
        }
    }
}

/// FNV-1a over the bits of every weight, in the model's order, as f32: equal exactly where
/// the weights are.
pub fn weights_hash<M: Module>(model: &M) -> u64 {
    struct Hash(u64);
    impl ModuleVisitor for Hash {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let values = param.val().into_data().convert::<f32>();
            for value in values.iter::<f32>() {
                self.0 = (self.0 ^ value.to_bits() as u64).wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
    let mut hash = Hash(0xcbf2_9ce4_8422_2325);
    model.visit(&mut hash);
    hash.0
}
