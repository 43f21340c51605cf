//! The ranks of a data-parallel run: which one this process is, how it reached the others
//! (torchrun's environment: `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`),
//! and the collectives the trainer needs. Two c10d process groups: Gloo on the CPU for small
//! control values (losses, stop flags, generator states), and the gradient group (NCCL when
//! every rank trains on a GPU, else the same Gloo group).

use crate::backend::dist::{Group, ReduceOp, Reducer, Store, Transport, HAS_NCCL};
use crate::base::{Error, Result, TorchContext};
use crate::spec::DistBackend;
use std::time::Duration;
use tch::{Device, Kind, Tensor};

/// The largest world pzt accepts.
pub const MAX_WORLD: usize = 65_536;

/// Gradient buckets hold at most this many bytes (PyTorch DDP's default, 25 MiB).
pub const BUCKET_BYTES: i64 = 25 << 20;

/// Where this process stands in a launched group (from torchrun's environment variables).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub rank: usize,
    pub size: usize,
    pub local_rank: usize,
    pub addr: String,
    pub port: u16,
    /// The launcher hosts the store (`TORCHELASTIC_USE_AGENT_STORE=True`, as torchrun and
    /// `pzt train --nproc` do); otherwise rank 0 does.
    pub agent_store: bool,
    /// Keys of this attempt are kept apart from an earlier one's (`TORCHELASTIC_RESTART_COUNT`).
    pub attempt: String,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn number(name: &str, v: &str, max: usize) -> Result<usize> {
    match v.trim().parse::<usize>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(Error::Config(format!(
            "the environment variable {name}={v} is not a number from 0 to {max}"
        ))),
    }
}

impl Launch {
    /// The launch of this process, when `RANK` and `WORLD_SIZE` say it is one rank of several
    /// (`None` when neither is set, or when `WORLD_SIZE` is 1 without `MASTER_ADDR` and
    /// `MASTER_PORT`; with them, a world of one still runs its collectives, as under
    /// `torchrun --nproc-per-node 1`).
    pub fn from_env() -> Result<Option<Launch>> {
        let (rank, size) = match (var("RANK"), var("WORLD_SIZE")) {
            (None, None) => return Ok(None),
            (Some(r), Some(w)) => (
                number("RANK", &r, MAX_WORLD)?,
                number("WORLD_SIZE", &w, MAX_WORLD)?,
            ),
            (r, _) => {
                let missing = if r.is_none() { "RANK" } else { "WORLD_SIZE" };
                return Err(Error::Config(format!(
                    "{missing} is not set, but {} is: a data-parallel launch sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT",
                    if r.is_none() { "WORLD_SIZE" } else { "RANK" }
                )));
            }
        };
        if size == 0 || rank >= size {
            return Err(Error::Config(format!(
                "RANK={rank} and WORLD_SIZE={size}: the rank must be below the world size (and the world at least 1)"
            )));
        }
        if size == 1 && (var("MASTER_ADDR").is_none() || var("MASTER_PORT").is_none()) {
            return Ok(None);
        }
        let local_rank = match var("LOCAL_RANK") {
            Some(v) => number("LOCAL_RANK", &v, MAX_WORLD)?,
            None => rank,
        };
        let addr = var("MASTER_ADDR").ok_or_else(|| {
            Error::Config("WORLD_SIZE is above 1 but MASTER_ADDR is not set (the address of rank 0's machine)".into())
        })?;
        let port = var("MASTER_PORT").ok_or_else(|| {
            Error::Config("WORLD_SIZE is above 1 but MASTER_PORT is not set (the store's port on MASTER_ADDR)".into())
        })?;
        let port = match port.trim().parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => {
                return Err(Error::Config(format!(
                    "MASTER_PORT={port} is not a port (1 to 65535)"
                )))
            }
        };
        Ok(Some(Launch {
            rank,
            size,
            local_rank,
            addr,
            port,
            agent_store: var("TORCHELASTIC_USE_AGENT_STORE").as_deref() == Some("True"),
            attempt: var("TORCHELASTIC_RESTART_COUNT").unwrap_or_else(|| "0".into()),
        }))
    }
}

/// This process's place among the ranks, and the groups that connect them.
pub struct World {
    pub rank: usize,
    pub size: usize,
    pub local_rank: usize,
    /// The gradient group's backend (`gloo` or `nccl`).
    pub backend: &'static str,
    /// Control values, on the CPU.
    ctl: Option<Group>,
    /// Gradients, on the training device (`None`: the control group).
    grads: Option<Group>,
    /// The hooks that sum the gradients during the backward pass (see [`World::attach`]).
    reducer: Option<Reducer>,
    _store: Option<Store>,
}

/// Says which rank failed at what, for a collective's error.
fn failed(rank: usize, what: &str, e: Error) -> Error {
    if e.is_bad_input() {
        return e; // a setting (a backend this build lacks, say), not a lost peer
    }
    let e = e.to_string();
    let e = e.strip_prefix("libtorch: ").unwrap_or(&e);
    Error::Run(format!(
        "rank {rank}: {what} failed: another rank has stopped, died or cannot be reached ({})",
        e.trim()
    ))
}

impl World {
    /// One process alone.
    pub fn single() -> World {
        World {
            rank: 0,
            size: 1,
            local_rank: 0,
            backend: "none",
            ctl: None,
            grads: None,
            reducer: None,
            _store: None,
        }
    }

    /// Joins the group `l` describes (it returns once every rank has), training on `device`.
    pub fn join(
        l: &Launch,
        backend: DistBackend,
        device: Device,
        timeout: Duration,
    ) -> Result<World> {
        let server = l.rank == 0 && !l.agent_store;
        let store = Store::new_bounded(
            &l.addr,
            l.port,
            server,
            timeout,
            &format!("pzt/{}", l.attempt),
        )
        .map_err(|e| {
            let e = e.to_string();
            let what = if server {
                "could not start the store on"
            } else {
                "could not reach the store at"
            };
            Error::Run(format!(
                "rank {}: {what} {}:{} ({})",
                l.rank,
                l.addr,
                l.port,
                e.strip_prefix("libtorch: ").unwrap_or(&e).trim()
            ))
        })?;
        let transport = Transport {
            iface: var("GLOO_SOCKET_IFNAME"),
            host: loopback(&l.addr).then(|| "127.0.0.1".to_string()),
        };
        let ctl = Group::gloo(&store, l.rank, l.size, timeout, &transport, "ctl")
            .map_err(|e| failed(l.rank, "joining the Gloo group", e))?;
        let mut w = World {
            rank: l.rank,
            size: l.size,
            local_rank: l.local_rank,
            backend: "gloo",
            ctl: Some(ctl),
            grads: None,
            reducer: None,
            _store: None,
        };
        // auto: NCCL only when every rank trains on a GPU (and this build has it).
        let gpu = matches!(device, Device::Cuda(_));
        let all_gpu = w.reduce_values(&[if gpu { 1.0 } else { 0.0 }], ReduceOp::Min)?[0] > 0.5;
        let nccl = match backend {
            DistBackend::Gloo => false,
            DistBackend::Nccl if !all_gpu => {
                return Err(Error::Config(
                    "[train] distributed_backend = \"nccl\" needs every rank on a GPU; some rank trains on the CPU (use \"gloo\" or \"auto\")".into(),
                ))
            }
            DistBackend::Nccl => true,
            DistBackend::Auto => all_gpu && HAS_NCCL,
        };
        if nccl {
            let index = match device {
                Device::Cuda(i) => i,
                _ => 0,
            };
            w.grads = Some(
                Group::nccl(&store, l.rank, l.size, timeout, index)
                    .map_err(|e| failed(l.rank, "joining the NCCL group", e))?,
            );
            w.backend = "nccl";
        }
        w._store = Some(store);
        Ok(w)
    }

    /// Whether this process is one rank of a launched group (even a group of one), so that the
    /// trainer runs the collectives.
    pub fn distributed(&self) -> bool {
        self.ctl.is_some()
    }

    /// Whether this process writes the run's files (rank 0).
    pub fn is_main(&self) -> bool {
        self.rank == 0
    }

    /// Hooks the trainable parameters, so that their gradients are summed over the ranks in
    /// flat buckets while a backward pass runs (after [`World::arm`]).
    pub fn attach(&mut self, params: &[Tensor]) -> Result<()> {
        if let Some(g) = self.grads.as_ref().or(self.ctl.as_ref()) {
            self.reducer = Some(Reducer::new(g, params, BUCKET_BYTES)?);
        }
        Ok(())
    }

    /// The next backward pass's gradients are summed over the ranks as they arrive.
    pub fn arm(&self) {
        if let Some(r) = &self.reducer {
            r.arm();
        }
    }

    /// After the armed backward pass: waits for the sums and writes them into the gradients.
    pub fn finish_gradients(&self) -> Result<()> {
        match &self.reducer {
            Some(r) => r
                .finish()
                .map_err(|e| failed(self.rank, "the gradient all-reduce", e)),
            None => Ok(()),
        }
    }

    /// Combines `values` over the ranks (every rank gets the result).
    pub fn reduce_values(&self, values: &[f64], op: ReduceOp) -> Result<Vec<f64>> {
        let Some(g) = &self.ctl else {
            return Ok(values.to_vec());
        };
        let t = Tensor::from_slice(values);
        g.all_reduce(std::slice::from_ref(&t), op, BUCKET_BYTES)
            .map_err(|e| failed(self.rank, "an all-reduce of control values", e))?;
        Vec::<f64>::try_from(&t).ctx("control values")
    }

    /// Combines a scalar tensor on any device over the ranks, read back as a float64.
    pub fn reduce_scalar(&self, t: &Tensor, op: ReduceOp) -> Result<f64> {
        let c = t
            .f_to_kind(Kind::Double)
            .and_then(|c| c.f_to(Device::Cpu))
            .and_then(|c| c.f_reshape([1]))
            .ctx("control value")?;
        if let Some(g) = &self.ctl {
            g.all_reduce(std::slice::from_ref(&c), op, BUCKET_BYTES)
                .map_err(|e| failed(self.rank, "an all-reduce of control values", e))?;
        }
        c.f_double_value(&[0]).ctx("control value")
    }

    /// Every rank's `bytes` (all ranks get the list, in rank order).
    pub fn gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
        let Some(g) = &self.ctl else {
            return Ok(vec![bytes.to_vec()]);
        };
        let longest = self.reduce_values(&[bytes.len() as f64], ReduceOp::Max)?[0] as usize;
        // Each rank fills its own row of a zero table (a 4-byte length, then the bytes); the
        // sum is everyone's rows.
        let row = longest + 4;
        let mut table = vec![0u8; row * self.size];
        let mine = &mut table[self.rank * row..(self.rank + 1) * row];
        mine[..4].copy_from_slice(&(bytes.len() as u32).to_le_bytes());
        mine[4..4 + bytes.len()].copy_from_slice(bytes);
        let t = Tensor::from_slice(&table);
        g.all_reduce(std::slice::from_ref(&t), ReduceOp::Sum, BUCKET_BYTES)
            .map_err(|e| failed(self.rank, "gathering the ranks' states", e))?;
        let all = Vec::<u8>::try_from(&t).ctx("ranks' states")?;
        Ok(all
            .chunks(row)
            .map(|r| {
                let n = u32::from_le_bytes([r[0], r[1], r[2], r[3]]) as usize;
                r[4..4 + n.min(longest)].to_vec()
            })
            .collect())
    }

    /// Waits for every rank.
    pub fn barrier(&self) -> Result<()> {
        match &self.ctl {
            Some(g) => g
                .barrier()
                .map_err(|e| failed(self.rank, "waiting for the other ranks", e)),
            None => Ok(()),
        }
    }
}

/// Whether `addr` is this machine's loopback (the transport then binds there too).
fn loopback(addr: &str) -> bool {
    addr == "localhost" || addr.starts_with("127.") || addr == "::1"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_addresses() {
        assert!(loopback("127.0.0.1") && loopback("localhost"));
        assert!(!loopback("10.0.0.2"));
    }
}
