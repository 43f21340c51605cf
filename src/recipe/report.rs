//! The plan as text and as JSON (`pzt plan`, `pzt show --json`).

use super::plan::Plan;
use crate::base::dtype::name as kind_name;
use crate::base::text::{grouped, human_bytes};
use crate::layers::moe::expert_split;
use crate::params::ParamEntry;
use crate::spec::InputSpec;
use crate::tree::Node;
use serde_json::{json, Value as Json};

impl Plan {
    /// The plan as JSON (for scripts and CI).
    pub fn to_json(&self) -> Json {
        let r = &self.recipe;
        json!({
            "recipe": r.resolved.path.display().to_string(),
            "run": { "name": r.run.name, "seed": r.run.seed, "out_dir": r.run.out_dir.display().to_string() },
            "input": r.input.as_ref().map(|i| json!({ "axes": i.axes, "dtype": kind_name(i.dtype) })),
            "output": self.output.as_ref().map(|(axes, k)| json!({ "axes": axes.iter().cloned().collect::<indexmap::IndexMap<String, i64>>(), "dtype": kind_name(*k) })),
            "training": r.train.as_ref().map(|t| json!({ "world_size": self.world_size, "batch_size": t.batch_size, "grad_accum": t.grad_accum, "global_batch": self.world_size * t.batch_size * t.grad_accum })),
            "parameters": { "total": self.counts.total, "trainable": self.counts.trainable, "frozen": self.counts.frozen },
            "experts": expert_split(&self.tree).map(|x| json!({ "layers": x.layers, "experts": x.experts, "top_k": x.top_k, "parameters": x.expert_params, "active_per_token": x.active_expert_params, "active_total": self.counts.total - x.expert_params + x.active_expert_params })),
            "memory_bytes": {
                "parameters": self.memory.parameters,
                "gradients": self.memory.gradients,
                "optimizer": self.memory.optimizer,
                "activations": self.memory.activations,
                "reference": self.memory.reference,
                "total": self.memory.total(),
            },
            "tree": tree_json(&self.tree, "", None),
        })
    }

    /// The experts' line of the report (a mixture of experts), or nothing.
    fn experts_line(&self) -> String {
        let Some(x) = expert_split(&self.tree) else {
            return String::new();
        };
        format!(
            "experts     {} layers of {} experts, {} per token: {} parameters in experts; a token uses {} of them, {} in all\n",
            x.layers,
            x.experts,
            x.top_k,
            grouped(x.expert_params),
            grouped(x.active_expert_params),
            grouped(self.counts.total - x.expert_params + x.active_expert_params)
        )
    }

    /// The human-readable report, with the tree to `depth` levels.
    pub fn render(&self, depth: usize, color: bool) -> String {
        let r = &self.recipe;
        let mut s = format!(
            "recipe      {}  (run `{}`, seed {}, out_dir {})\n",
            r.resolved.path.display(),
            r.run.name,
            r.run.seed,
            r.run.out_dir.display()
        );
        s.push_str("\nmodel\n");
        for line in self.tree.render_styled(depth, color).lines() {
            s.push_str(&format!("  {line}\n"));
        }
        s.push('\n');
        match (&r.input, &self.output) {
            (Some(i), Some((o, k))) => {
                s.push_str(&format!("input       {}\n", describe_input(i)));
                let axes: Vec<String> = o.iter().map(|(n, v)| format!("{n}: {v}")).collect();
                s.push_str(&format!(
                    "output      {{{}}} {}\n",
                    axes.join(", "),
                    kind_name(*k)
                ));
            }
            _ => s.push_str("input       not declared ([model.input]); shapes not checked\n"),
        }
        if let Some(t) = &r.train {
            s.push_str(&format!(
                "training    global batch {} ({} process{} x batch_size {} x grad_accum {})\n",
                self.world_size * t.batch_size * t.grad_accum,
                self.world_size,
                if self.world_size == 1 { "" } else { "es" },
                t.batch_size,
                t.grad_accum
            ));
        }
        let c = self.counts;
        s.push_str(&format!(
            "parameters  {} total, {} trainable, {} frozen\n",
            grouped(c.total),
            grouped(c.trainable),
            grouped(c.frozen)
        ));
        s.push_str(&self.experts_line());
        s.push_str(&self.memory_lines());
        s
    }

    /// The memory estimate's lines of the report.
    fn memory_lines(&self) -> String {
        let r = &self.recipe;
        let mut s = String::new();
        let m = self.memory;
        s.push_str(&format!(
            "memory      training estimate ({})\n",
            optimizer_label(r.optim.as_ref())
        ));
        s.push_str(&format!(
            "  parameters   {:>12}\n",
            human_bytes(m.parameters)
        ));
        s.push_str(&format!(
            "  gradients    {:>12}\n",
            human_bytes(m.gradients)
        ));
        s.push_str(&format!(
            "  optimizer    {:>12}\n",
            human_bytes(m.optimizer)
        ));
        if r.input.is_some() {
            let at: Vec<String> = ["model", "input", "axes"].map(String::from).to_vec();
            let whence = if r.resolved.root.lookup(&at).is_some() {
                "declared input"
            } else {
                "the training batch"
            };
            let pairs = if r.objective.is_preference() {
                ", 2 sequences per pair"
            } else {
                ""
            };
            s.push_str(&format!(
                "  activations  {:>12}  ({whence}{pairs})\n",
                human_bytes(m.activations)
            ));
        }
        if m.reference > 0 {
            s.push_str(&format!(
                "  reference    {:>12}  (a frozen copy for [objective] reference)\n",
                human_bytes(m.reference)
            ));
        }
        s.push_str(&format!("  total        {:>12}\n", human_bytes(m.total())));
        s
    }
}

/// `AdamW, fp32 optimizer state`, `SGD, no optimizer state`, ...
fn optimizer_label(optim: Option<&crate::spec::OptimConfig>) -> String {
    let (what, bytes) = optim.map_or(("AdamW", 8), |o| (o.describe(), o.state_bytes_per_value()));
    if bytes == 0 {
        format!("{what}, no optimizer state")
    } else {
        format!("{what}, fp32 optimizer state")
    }
}

pub(super) fn describe_input(i: &InputSpec) -> String {
    let axes: Vec<String> = i.axes.iter().map(|(n, v)| format!("{n}: {v}")).collect();
    format!("{{{}}} {}", axes.join(", "), kind_name(i.dtype))
}

/// A node as JSON: kind, path, summary, config, parameters, children.
pub fn tree_json(n: &Node, path: &str, name: Option<&str>) -> Json {
    let params: Vec<Json> = n
        .param_entries()
        .iter()
        .map(|(pn, e)| json!({ "name": pn, "label": e.label(), "shape": e.shape(), "dtype": kind_name(e.kind()), "trainable": !matches!(e, ParamEntry::Frozen(_)) && (matches!(e, ParamEntry::Slot(_)) || e.trainable()) }))
        .collect();
    let children: Vec<Json> = n
        .children()
        .iter()
        .map(|(cn, c)| {
            let p = if path.is_empty() {
                cn.clone()
            } else {
                format!("{path}.{cn}")
            };
            tree_json(c, &p, Some(cn))
        })
        .collect();
    let config = n
        .layer()
        .config()
        .ok()
        .map(|t| serde_json::to_value(t).unwrap_or(Json::Null))
        .unwrap_or(Json::Null);
    json!({ "name": name, "path": path, "kind": n.kind(), "summary": n.layer().summary(), "config": config, "params": params, "children": children })
}
