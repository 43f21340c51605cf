//! How a run executes: one process alone, or one rank of a data-parallel run. Everything that
//! differs between the two is here, so that the step loop asks and never branches on it: the
//! order of setting up, which slice of the global micro-batch this process trains on, the loss
//! weight and dropout stream of a rank, the gradient all-reduce, the loss sum, the flags the
//! ranks agree on, the generator states a checkpoint holds, the barriers, and the world's part
//! of the start line. The collectives themselves are in `world.rs`.

use super::task::Batch;
use super::world::World;
use crate::backend::dist::ReduceOp;
use crate::base::seed::mix;
use crate::base::{Result, TorchContext};
use crate::params::Parameter;
use crate::spec::TrainConfig;
use tch::Tensor;

/// One process alone, or one rank of several.
pub enum Execution {
    /// One process: no collectives.
    Single,
    /// One rank of a launched group (even a group of one, as under `torchrun
    /// --nproc-per-node 1`, which still runs its collectives).
    DataParallel(World),
}

impl Execution {
    /// The execution of a process in `world` (a world that runs no collectives is one process).
    pub fn new(world: World) -> Execution {
        match world.distributed() {
            true => Execution::DataParallel(world),
            false => Execution::Single,
        }
    }

    /// This process's rank (0 when alone).
    pub fn rank(&self) -> usize {
        match self {
            Execution::Single => 0,
            Execution::DataParallel(w) => w.rank,
        }
    }

    /// The number of processes.
    pub fn size(&self) -> usize {
        match self {
            Execution::Single => 1,
            Execution::DataParallel(w) => w.size,
        }
    }

    /// This process's rank on its machine (which GPU it takes).
    pub fn local_rank(&self) -> usize {
        match self {
            Execution::Single => 0,
            Execution::DataParallel(w) => w.local_rank,
        }
    }

    /// The world size and the gradient group's backend (`1, "none"` for one process), as
    /// `environment.jsonl` records them.
    pub fn world(&self) -> (usize, &'static str) {
        match self {
            Execution::Single => (1, "none"),
            Execution::DataParallel(w) => (w.size, w.backend),
        }
    }

    /// Whether this process writes the run's files, logs and evaluates (rank 0).
    pub fn is_main(&self) -> bool {
        self.rank() == 0
    }

    /// Runs `setup` on every rank, rank 0 first (it takes the run directory and writes the
    /// data cache) and the others after it.
    pub fn in_turn<T>(&self, setup: impl FnOnce() -> Result<T>) -> Result<T> {
        if !self.is_main() {
            self.barrier()?;
        }
        let done = setup()?;
        if self.is_main() {
            self.barrier()?;
        }
        Ok(done)
    }

    /// Hooks the trainable parameters, so that their gradients are summed over the ranks.
    pub fn attach(&mut self, params: &[Parameter]) -> Result<()> {
        match self {
            Execution::Single => Ok(()),
            Execution::DataParallel(w) => {
                let values: Vec<Tensor> = params.iter().map(|p| p.value()).collect();
                w.attach(&values)
            }
        }
    }

    /// The global micro-batch: what one process with `batch_size` x the world size would take.
    pub fn global_batch(&self, batch_size: usize) -> usize {
        batch_size * self.size()
    }

    /// This rank's slice of the global micro-batch `idx`, by position.
    pub fn share<'a>(&self, idx: &'a [usize], batch_size: usize) -> &'a [usize] {
        let rank = self.rank();
        &idx[rank * batch_size..(rank + 1) * batch_size]
    }

    /// The dropout stream's seed of a micro-batch on this rank: each rank of several its own.
    pub fn stream_seed(&self, seed: u64) -> u64 {
        match self {
            Execution::DataParallel(w) if w.size > 1 => mix(seed, w.rank as u64),
            _ => seed,
        }
    }

    /// A micro-batch's loss as this rank contributes it: its mean over its c targets, weighted
    /// by c / (all ranks' targets), so that the ranks' summed gradients are those of the global
    /// batch's mean.
    pub fn weigh_loss(&self, loss: Tensor, b: &Batch) -> Result<Tensor> {
        match self {
            Execution::Single => Ok(loss),
            Execution::DataParallel(w) => {
                // A preference loss is a mean over pairs; the next-token loss over targets.
                let mine = match &b.pref {
                    Some(p) => p.pairs as f64,
                    None => b
                        .mask
                        .f_sum(tch::Kind::Double)
                        .and_then(|c| c.f_double_value(&[]))
                        .ctx("loss targets")?,
                };
                let all = w.reduce_values(&[mine], ReduceOp::Sum)?[0];
                loss.f_mul_scalar(mine / all.max(1.0)).ctx("loss")
            }
        }
    }

    /// Before a backward pass: the last one of the step (`last`) sums the gradients over the
    /// ranks as they arrive.
    pub fn before_backward(&self, last: bool) {
        if let (Execution::DataParallel(w), true) = (self, last) {
            w.arm();
        }
    }

    /// After the step's backward passes: waits for the summed gradients.
    pub fn finish_gradients(&self) -> Result<()> {
        match self {
            Execution::Single => Ok(()),
            Execution::DataParallel(w) => w.finish_gradients(),
        }
    }

    /// The sums of `values` over every rank.
    pub fn sum_values(&self, values: &[f64]) -> Result<Vec<f64>> {
        match self {
            Execution::Single => Ok(values.to_vec()),
            Execution::DataParallel(w) => w.reduce_values(values, ReduceOp::Sum),
        }
    }

    /// The step's loss sum (a float64 scalar on the device), over every rank.
    pub fn loss_sum(&self, t: &Tensor) -> Result<f64> {
        match self {
            Execution::Single => t.f_double_value(&[]).ctx("loss"),
            Execution::DataParallel(w) => w.reduce_scalar(t, ReduceOp::Sum),
        }
    }

    /// The ranks stop and checkpoint together: any rank's stop, rank 0's new best.
    pub fn agree_on_flags(&self, stopping: bool, new_best: bool) -> Result<(bool, bool)> {
        match self {
            Execution::Single => Ok((stopping, new_best)),
            Execution::DataParallel(w) => {
                let flags = [f64::from(u8::from(stopping)), f64::from(u8::from(new_best))];
                let agreed = w.reduce_values(&flags, ReduceOp::Max)?;
                Ok((agreed[0] > 0.5, agreed[1] > 0.5))
            }
        }
    }

    /// The other ranks' generator states (ranks 1 and up, in order), for rank 0's checkpoint;
    /// every rank calls it with its own state `mine`.
    pub fn other_rng_states(&self, mine: &str) -> Result<Vec<String>> {
        match self {
            Execution::Single => Ok(vec![]),
            Execution::DataParallel(w) => Ok(w
                .gather_bytes(mine.as_bytes())?
                .iter()
                .skip(1)
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .collect()),
        }
    }

    /// Every rank must start from the same place with the same plan (`agreement.rs`): the
    /// `facts` of each are compared.
    pub fn agree_on_start(
        &self,
        facts: impl FnOnce() -> Result<Vec<(&'static str, f64)>>,
    ) -> Result<()> {
        match self {
            Execution::Single => Ok(()),
            Execution::DataParallel(w) => super::agreement::agree(w, &facts()?),
        }
    }

    /// Waits for every rank.
    pub fn barrier(&self) -> Result<()> {
        match self {
            Execution::Single => Ok(()),
            Execution::DataParallel(w) => w.barrier(),
        }
    }

    /// The start line's data-parallel part: the world size and the global batch.
    pub fn world_line(&self, t: &TrainConfig) -> String {
        let Execution::DataParallel(w) = self else {
            return String::new();
        };
        format!(
            "; {} process{} ({}), global batch {} ({} x {} x {})",
            w.size,
            if w.size == 1 { "" } else { "es" },
            w.backend,
            w.size * t.batch_size * t.grad_accum,
            w.size,
            t.batch_size,
            t.grad_accum
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_process_takes_the_whole_batch_and_runs_no_collectives() -> Result<()> {
        let e = Execution::new(World::single());
        assert!(matches!(e, Execution::Single) && e.is_main());
        assert_eq!((e.rank(), e.size(), e.world()), (0, 1, (1, "none")));
        let idx = [4, 1, 3];
        assert_eq!((e.global_batch(3), e.share(&idx, 3)), (3, &idx[..]));
        assert_eq!(e.stream_seed(42), 42);
        assert_eq!(e.agree_on_flags(true, false)?, (true, false));
        assert!(e.other_rng_states("00ff")?.is_empty());
        e.in_turn(|| Ok(()))?;
        e.agree_on_start(|| Err(crate::base::Error::Run("not asked".into())))
    }
}
