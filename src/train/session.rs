//! A session: everything a run needs, set up from its spec. libtorch's global settings
//! (threads, the global generators' seed, deterministic algorithms), the device, the
//! tokenizer, the dataset (from the cache when possible), the model built on the device with
//! parameters from the seed, and the task. Forward passes and greedy completions run here,
//! under bfloat16 autocast when `[train] precision = "bf16"`.

use super::head::{self, Output};
use super::losses::Sums;
use super::task::{self, Task};
use crate::base::{Error, Result, TorchContext};
use crate::data::tokenizer::Tokenizer;
use crate::data::{Dataset, Example};
use crate::models::generate::{generate, LmAxes, Sampling};
use crate::models::token_head;
use crate::named::NamedTensor;
use crate::spec::{Precision, RunSpec};
use crate::tree::{Builder, Node, SideInputs};
use serde_json::{Map, Value};
use tch::{Device, Kind, Tensor};

/// A run's model, data and settings.
pub struct Session {
    pub spec: RunSpec,
    pub tokenizer: Option<Tokenizer>,
    pub data: Dataset,
    pub data_cached: bool,
    pub tree: Node,
    pub device: Device,
    pub task: Box<dyn Task>,
    /// A preference objective's reference model.
    pub reference: Option<super::reference::RefModel>,
    /// Its log-probabilities of every pair, when `precompute_reference` computed them (the
    /// model is dropped then).
    pub precomputed: Option<super::precompute::Precomputed>,
}

/// A preference objective needs preference rows, and preference rows a preference objective.
fn check_objective(spec: &RunSpec) -> Result<()> {
    let (pref_data, pref_obj) = (spec.data.is_preference(), spec.objective.is_preference());
    if pref_data && !pref_obj {
        return Err(Error::ConfigField {
            field: "kind".into(),
            message: "[objective]: the data holds preference rows, which train with a preference objective: set [objective] kind = \"dpo\", \"ipo\", \"orpo\", \"simpo\" or \"kto\"".into(),
        }
        .in_section("objective"));
    }
    if pref_obj && !pref_data {
        return Err(Error::ConfigField {
            field: "kind".into(),
            message: format!(
                "[objective]: kind = \"{}\" trains on preference rows: set [data] source = \"preference\"",
                spec.objective.kind.name()
            ),
        }
        .in_section("objective"));
    }
    Ok(())
}

/// KTO trains on unpaired rows, the other preference objectives on pairs.
fn check_rows(spec: &RunSpec, data: &Dataset) -> Result<()> {
    use crate::data::ExampleKind;
    use crate::spec::ObjectiveKind;
    let want = match spec.objective.kind {
        ObjectiveKind::Lm => return Ok(()),
        ObjectiveKind::Kto => ExampleKind::Unpaired,
        _ => ExampleKind::Pairs,
    };
    if data.kind == want {
        return Ok(());
    }
    Err(Error::ConfigField {
        field: "kind".into(),
        message: format!(
            "[objective]: kind = \"{}\" trains on {}, but the data holds {}",
            spec.objective.kind.name(),
            want.describe(),
            data.kind.describe()
        ),
    }
    .in_section("objective"))
}

/// The device named by `[train] device`.
pub fn pick_device(name: &str) -> Result<Device> {
    crate::backend::parse_device(name).map_err(|e| {
        Error::ConfigField {
            field: "device".into(),
            message: match e {
                crate::backend::DeviceError::NoCuda => {
                    "[train]: device = \"cuda\" but libtorch sees no CUDA device".into()
                }
                crate::backend::DeviceError::Unknown(other) => {
                    format!("[train]: unknown device `{other}`")
                }
            },
        }
        .in_section("train")
    })
}

/// The device of the rank with `local_rank` on its machine: `[train] device`, and a GPU
/// chosen there is GPU `local_rank`.
pub fn rank_device(name: &str, local_rank: usize) -> Result<Device> {
    match pick_device(name)? {
        Device::Cuda(_) => {
            let n = tch::Cuda::device_count().max(0) as usize;
            if local_rank >= n {
                return Err(Error::Config(format!(
                    "LOCAL_RANK={local_rank}, but this machine has {n} GPU(s): start at most {n} GPU rank(s) per machine (or set [train] device = \"cpu\")"
                )));
            }
            Ok(Device::Cuda(local_rank))
        }
        d => Ok(d),
    }
}

/// A training step below this many floating-point operations (about 6 x parameters x tokens
/// of a micro-batch) runs on one CPU thread by default: its operations are too small for a
/// second thread to pay for the synchronization at the end of each one, and when another
/// process takes a core, every operation waits for the thread the scheduler took away
/// (benches/busy.sh: the quickstart ran 7 times slower on two threads with one core busy).
pub const SMALL_STEP_FLOPS: f64 = 2e9;

/// The CPU threads of a run that neither `[train] threads` nor `OMP_NUM_THREADS` sets: one
/// for a small step ([`SMALL_STEP_FLOPS`]), else libtorch's own choice (None: one per core).
/// It depends on the recipe only, so a run and its resumption use the same.
pub fn default_threads(tree: &Node, spec: &RunSpec) -> Option<i32> {
    if std::env::var_os("OMP_NUM_THREADS").is_some() {
        return None;
    }
    let tokens = spec.train.batch_size * spec.data.seq_len().unwrap_or(1).max(1);
    let flops = 6.0 * tree.num_params() as f64 * tokens as f64;
    (flops < SMALL_STEP_FLOPS).then_some(1)
}

impl Session {
    /// Sets up the run. Errors about a key of `[train]` or `[data]` are
    /// [`Error::InSection`]s.
    pub fn new(spec: RunSpec) -> Result<Session> {
        Session::on_rank(spec, 0)
    }

    /// Sets up the run for the rank with `local_rank` on its machine (it trains on GPU
    /// `local_rank` when the run is on GPUs).
    pub fn on_rank(spec: RunSpec, local_rank: usize) -> Result<Session> {
        let tc = &spec.train;
        if let Some(n) = tc.threads {
            tch::set_num_threads(n);
        }
        if tc.release_memory {
            use crate::base::memory;
            memory::return_freed_after(memory::RELEASE_AFTER_MS).map_err(Error::Config)?;
        }
        // Nothing in the loop draws from libtorch's global generators, but seed them anyway so
        // that the saved RNG states (and any custom layer that uses them) are reproducible.
        tch::manual_seed(spec.run.seed as i64);
        if tc.deterministic {
            crate::backend::set_deterministic_warn_only(true)?;
            crate::backend::set_cudnn_deterministic(true)?;
        }
        check_objective(&spec)?;
        let device = rank_device(&tc.device, local_rank)?;
        let opened = Dataset::open(&spec.data, &spec.base_dir, &spec.run.out_dir, spec.run.seed)?;
        let (tokenizer, data, data_cached) = (opened.tokenizer, opened.dataset, opened.cached);
        let builder = Builder::new(spec.run.seed)
            .on(device)
            .dtype(spec.param_dtype);
        let tree = spec.model.build(&spec.registry, &builder)?;
        if tc.threads.is_none() && device == tch::Device::Cpu {
            if let Some(n) = default_threads(&tree, &spec) {
                tch::set_num_threads(n);
            }
        }
        let task = task::for_data(
            &spec.data,
            &spec.objective,
            &spec.input,
            data.num_features,
            tc.eval_generate,
        );
        check_rows(&spec, &data)?;
        // Taken now, before a resumed run loads its checkpoint: the model as the run started.
        // A builder of its own: a reference from another directory shares no parameter with
        // the model, whatever their labels.
        let fresh = Builder::new(spec.run.seed)
            .on(device)
            .dtype(spec.param_dtype);
        let reference =
            super::reference::build(&spec, &tree, &fresh).map_err(|e| e.in_section("objective"))?;
        let session = Session {
            spec,
            tokenizer,
            data,
            data_cached,
            tree,
            device,
            task,
            reference,
            precomputed: None,
        };
        session.check_vocabulary()?;
        session.check_classes()?;
        let mut session = session;
        session.precompute_reference()?;
        Ok(session)
    }

    /// A language model's vocabulary must cover the tokenizer's, and every token id of the
    /// prepared data.
    fn check_vocabulary(&self) -> Result<()> {
        let lookup = super::reference::vocabulary(&self.tree);
        self.check_tokenizer_vocabulary(lookup)?;
        match (lookup, self.data.max_id) {
            (Some(v), Some(max)) if max >= v => Err(Error::Config(format!(
                "[data]: the prepared data holds token id {max}, outside the model's vocabulary (0..{v}); its tokenizer does not belong to this model"
            ))),
            _ => Ok(()),
        }
    }

    fn check_tokenizer_vocabulary(&self, lookup: Option<i64>) -> Result<()> {
        match (lookup, &self.tokenizer) {
            (Some(v), Some(tok)) if v < tok.vocab_size() => Err(Error::Config(format!(
                "the model's vocabulary ({v}) is smaller than the tokenizer's ({})",
                tok.vocab_size()
            ))),
            _ => Ok(()),
        }
    }

    /// A classifier's output must have a place for every class label in the data: one forward
    /// of a single zero row finds the output's class count before any step runs.
    fn check_classes(&self) -> Result<()> {
        let classes = self.data.num_classes;
        if self.spec.data.is_lm() || classes <= 0 {
            return Ok(());
        }
        let (b, f) = (&self.spec.input.batch, self.spec.input.item_axis());
        let x = Tensor::f_zeros([1, self.data.num_features], (Kind::Float, self.device))
            .ctx("class check")?;
        let x = NamedTensor::wrap(x, &[b.as_str(), f])?;
        let _ng = tch::no_grad_guard();
        let y = self.forward(x, &SideInputs::new())?;
        let out: Vec<i64> = y
            .names()
            .iter()
            .filter(|n| *n != b)
            .filter_map(|n| y.size_of(n).ok())
            .collect();
        match out.as_slice() {
            [n] if *n < classes => Err(Error::Config(format!(
                "[data]: the largest class label in the data is {}, but the model outputs {n} classes (labels 0 to {})",
                classes - 1,
                n - 1
            ))),
            _ => Ok(()),
        }
    }

    /// Runs `f` under the run's autocast (bfloat16 with `precision = "bf16"`).
    fn autocast<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let on = self.spec.train.precision == Precision::Bf16;
        if on {
            crate::backend::set_autocast(self.device, Some(Kind::BFloat16))?;
        }
        let out = f();
        if on {
            crate::backend::set_autocast(self.device, None)?;
        }
        out
    }

    /// The model's output on `x`.
    pub fn forward(&self, x: NamedTensor, side: &SideInputs) -> Result<NamedTensor> {
        self.autocast(|| self.tree.forward(x, side).and_then(|v| v.into_tensor()))
    }

    /// The output of `tree` (the model or its reference) on `x` as a loss reads it: for a
    /// token-level task whose input has more tokens than one chunk of the loss, the hidden
    /// states before the token head (the loss runs it in chunks, [`super::head`]); else the
    /// whole logits.
    pub fn output(&self, tree: &Node, x: NamedTensor, side: &SideInputs) -> Result<Output> {
        let tokens = x.tensor().numel();
        let vocab = super::reference::vocabulary(tree);
        if let (true, Some(split), Some(v)) =
            (self.task.token_level(), token_head::split(tree), vocab)
        {
            let chunk = self.spec.train.loss_chunk(v.max(1) as usize);
            if tokens > chunk {
                let hidden = self.autocast(|| token_head::trunk(tree, &split, x, side))?;
                let autocast = (self.spec.train.precision == Precision::Bf16)
                    .then_some((self.device, Kind::BFloat16));
                return Ok(Output::Hidden(head::Hidden {
                    hidden,
                    head: split.head,
                    side: side.clone(),
                    chunk,
                    autocast,
                }));
            }
        }
        let y = self.autocast(|| tree.forward(x, side).and_then(|v| v.into_tensor()))?;
        Ok(Output::Logits(y))
    }

    /// `precompute_reference`: the reference's log-probabilities of every pair, read from the
    /// file beside the prepared data or computed now and written there; the reference model is
    /// dropped.
    fn precompute_reference(&mut self) -> Result<()> {
        use super::precompute;
        let (Some(r), true) = (&self.reference, self.spec.objective.precompute_reference) else {
            return Ok(());
        };
        let fp = super::reference::fingerprint(r, &self.tree)?;
        let cache = self
            .spec
            .data
            .cache_path(&self.spec.base_dir, &self.spec.run.out_dir);
        let path = precompute::path(&cache, &self.data, &fp)?;
        let n = (self.data.train.len(), self.data.eval.len());
        let p = match precompute::read(&path, n) {
            Some(p) => p,
            None => {
                let _ng = tch::no_grad_guard();
                let bs = self.spec.train.batch_size.max(1);
                let logps = |items: &[&Example]| -> Result<Vec<f32>> {
                    let b = self.task.batch(items, self.device)?;
                    Vec::<f32>::try_from(
                        self.reference_logps(&b)?
                            .f_to_kind(Kind::Float)
                            .ctx("precompute")?,
                    )
                    .ctx("precompute")
                };
                let p = precompute::Precomputed {
                    train: precompute::compute(&self.data.train, bs, &logps)?,
                    eval: precompute::compute(&self.data.eval, bs, &logps)?,
                };
                std::fs::create_dir_all(&cache).map_err(|e| Error::Io {
                    path: cache.display().to_string(),
                    source: e,
                })?;
                precompute::write(&path, &p)?;
                p
            }
        };
        self.precomputed = Some(p);
        self.reference = None;
        Ok(())
    }

    /// Sets the reference log-probabilities of the preference batch `b` of the pairs `indices`
    /// of the train (or eval) split: read from the precomputed ones, or run by the reference.
    pub fn attach_reference(
        &self,
        b: &mut task::Batch,
        eval: bool,
        indices: &[usize],
    ) -> Result<()> {
        let r = match (&self.precomputed, &self.reference) {
            (Some(p), _) => p.batch(eval, indices, self.device)?,
            (None, Some(_)) => self.reference_logps(b)?,
            (None, None) => return Ok(()),
        };
        if let Some(p) = b.pref.as_mut() {
            p.reference = Some(r);
        }
        Ok(())
    }

    /// The reference's log-probability of each completion of the preference batch `b` (no
    /// gradient, no dropout).
    pub fn reference_logps(&self, b: &task::Batch) -> Result<Tensor> {
        use super::reference::RefModel;
        let (Some(r), Some(pt)) = (&self.reference, self.task.preference()) else {
            return Err(Error::Config("the objective has no reference model".into()));
        };
        let _ng = tch::no_grad_guard();
        let y = match r {
            RefModel::AdaptersOff => {
                let side = b.side.clone().with(
                    crate::layers::toolshed::lora::ADAPTERS,
                    crate::tree::SideValue::Bool(false),
                );
                self.output(&self.tree, b.x.clone(), &side)?
            }
            RefModel::Frozen(t) => self.output(t, b.x.clone(), &b.side)?,
        };
        Ok(pt.logps(&y, b)?.0)
    }

    /// Greedy completion of `prompt` (the whole sequence recomputed per token), stopping after
    /// the end token.
    pub fn greedy(&self, prompt: &[i64], max_new: usize) -> Result<Vec<i64>> {
        let eos: Vec<i64> = self.tokenizer.iter().map(|t| t.eos_id()).collect();
        let axes = LmAxes::of(&self.spec.input);
        let sampling = Sampling::default();
        self.autocast(|| {
            generate(
                &self.tree,
                prompt,
                max_new,
                &eos,
                &sampling,
                &axes,
                self.device,
                false,
                |_| {},
            )
        })
    }

    /// The eval metrics on the eval split (empty when there is none).
    pub fn evaluate(&self) -> Result<Map<String, Value>> {
        let _ng = tch::no_grad_guard();
        if self.data.eval.is_empty() {
            return Ok(Map::new());
        }
        let mut sums = Sums::default();
        let n = self.data.eval.len();
        let bs = self.spec.train.batch_size.max(1);
        for start in (0..n).step_by(bs) {
            let chunk: Vec<Example> = (start..(start + bs).min(n))
                .map(|i| self.data.eval.get(i))
                .collect::<Result<_>>()?;
            let items: Vec<&Example> = chunk.iter().collect();
            let mut b = self.task.batch(&items, self.device)?;
            let indices: Vec<usize> = (start..(start + bs).min(n)).collect();
            self.attach_reference(&mut b, true, &indices)?;
            let y = self.output(&self.tree, b.x.clone(), &b.side)?;
            sums += self.task.loss(&y, &b)?.1;
        }
        self.task
            .metrics(sums, &self.data.eval, &|p, n| self.greedy(p, n))
    }
}
