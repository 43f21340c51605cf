//! The model tree: parameters (sharing, slots, unbind/bind, freeze), deterministic init, state
//! variables and stateless_call, serialization round trip, display, custom layer kinds.
use crate::common::*;
use pzt::layers::linear::Linear;
use pzt::layers::misc::SaveIntermediate;
use pzt::models::mlp::mlp;
use pzt::prelude::*;
use pzt::tree::registry::serde_factory;
use std::collections::BTreeMap;
use tch::{Kind, Tensor};

fn model(b: &Builder) -> Node {
    mlp(
        &b.scope("mlp"),
        "features",
        "hidden",
        &[3, 5, 2],
        Activation::Relu,
    )
    .unwrap()
}

#[test]
fn paths_labels_and_parameter_counts() {
    let m = model(&Builder::new(0));
    let labels: Vec<String> = m
        .parameters()
        .iter()
        .map(|p| p.label().to_string())
        .collect();
    assert_eq!(
        labels,
        [
            "mlp.0.linear.weights",
            "mlp.0.bias.bias",
            "mlp.2.linear.weights",
            "mlp.2.bias.bias"
        ]
    );
    assert_eq!(m.num_params(), 3 * 5 + 5 + 5 * 2 + 2);
    let n = m.get(&["2".into(), "linear".into()]).unwrap();
    assert_eq!(n.kind(), "Linear");
    let e = m.get(&["2".into(), "nope".into()]).unwrap_err().to_string();
    assert!(
        e.contains("2.nope") && e.contains("`2` has no child `nope`"),
        "{e}"
    );
}

#[test]
fn init_is_deterministic_from_seed_and_label() {
    let a = model(&Builder::new(42));
    let b = model(&Builder::new(42));
    let c = model(&Builder::new(43));
    for (p, q) in a.parameters().iter().zip(b.parameters()) {
        assert_eq!(max_abs_diff(&p.value(), &q.value()), 0.0);
    }
    assert!(max_abs_diff(&a.parameters()[0].value(), &c.parameters()[0].value()) > 0.0);
    // Construction order does not matter: building another layer first changes nothing.
    let bld = Builder::new(42);
    let _other = Linear::new(axes(&[("x", 7)]), axes(&[("y", 7)]))
        .build(&bld.scope("other"), None)
        .unwrap();
    let d = model(&bld);
    assert_eq!(
        max_abs_diff(&a.parameters()[0].value(), &d.parameters()[0].value()),
        0.0
    );
    // The same label in a different model gets the same value.
    let lone = Linear::new(axes(&[("features", 3)]), axes(&[("hidden", 5)]))
        .build(&Builder::new(42).scope("mlp.0.linear"), None)
        .unwrap();
    assert_eq!(
        max_abs_diff(&lone.param("weights").unwrap(), &a.parameters()[0].value()),
        0.0
    );
}

#[test]
fn slots_unbind_bind_and_errors() {
    let slots = model(&Builder::slots());
    assert!(slots.parameters().is_empty());
    assert_eq!(slots.num_params(), 3 * 5 + 5 + 5 * 2 + 2);
    let x = named(&[4, 3], &["batch", "features"], 1);
    let e = slots.forward(x.clone(), &SideInputs::new()).unwrap_err();
    assert!(
        e.to_string().contains("mlp.0.linear.weights") && e.to_string().contains("not bound"),
        "{e}"
    );
    assert_eq!(e.layer_path().as_deref(), Some("0.linear"));

    let real = model(&Builder::new(3));
    let (unbound, params) = real.unbind_params().unwrap();
    assert!(unbound.parameters().is_empty());
    assert_eq!(params.len(), 4);
    let rebound = slots.bind(&params).unwrap();
    let y1 = real
        .forward(x.clone(), &SideInputs::new())
        .unwrap()
        .into_tensor()
        .unwrap();
    let y2 = rebound
        .forward(x.clone(), &SideInputs::new())
        .unwrap()
        .into_tensor()
        .unwrap();
    assert_close(&y1, &y2, 0.0);
    // Rebinding shares the parameters: an update through one tree shows in the other.
    params[1].set_value(Tensor::ones([5], (Kind::Float, tch::Device::Cpu)));
    let y3 = real
        .forward(x.clone(), &SideInputs::new())
        .unwrap()
        .into_tensor()
        .unwrap();
    let y4 = rebound
        .forward(x.clone(), &SideInputs::new())
        .unwrap()
        .into_tensor()
        .unwrap();
    assert_close(&y3, &y4, 0.0);
    // Missing and misshapen parameters are named.
    let e = slots.bind(&params[..2]).unwrap_err().to_string();
    assert!(e.contains("mlp.2.linear.weights"), "{e}");
    let wrong = Parameter::new(
        "mlp.0.bias.bias",
        Tensor::zeros([6], (Kind::Float, tch::Device::Cpu)),
    );
    let mut ps = params.clone();
    ps[1] = wrong;
    let e = slots.bind(&ps).unwrap_err().to_string();
    assert!(e.contains("[6]") && e.contains("[5]"), "{e}");
}

#[test]
fn shared_parameters_and_freeze() {
    let b = Builder::new(5);
    let lin = Linear::new(axes(&[("f", 4)]), axes(&[("f", 4)]))
        .build(&b.scope("tied"), None)
        .unwrap();
    // The same node placed twice shares its parameter.
    let m = Sequential::new(vec![
        lin.clone(),
        Node::new(Elementwise {
            function: Activation::Tanh,
        }),
        lin.clone(),
    ]);
    assert_eq!(m.parameters().len(), 1);
    assert_eq!(m.all_param_entries().len(), 2);
    assert_eq!(m.num_params(), 16);
    let x = named(&[2, 4], &["batch", "f"], 6);
    let y = m
        .forward(x.clone(), &SideInputs::new())
        .unwrap()
        .into_tensor()
        .unwrap();
    y.tensor().sum(Kind::Float).backward();
    assert!(m.parameters()[0].grad().is_some());

    let frozen = m.freeze_params().unwrap();
    assert!(frozen.parameters().is_empty());
    assert_eq!(
        frozen
            .all_param_entries()
            .iter()
            .filter(|(_, _, e)| matches!(e, ParamEntry::Frozen(_)))
            .count(),
        2
    );
    let before = frozen
        .forward(x.clone(), &SideInputs::new())
        .unwrap()
        .into_tensor()
        .unwrap();
    // Changing the live parameter does not change the frozen snapshot.
    m.parameters()[0].set_value(Tensor::zeros([4, 4], (Kind::Float, tch::Device::Cpu)));
    let after = frozen
        .forward(x.clone(), &SideInputs::new())
        .unwrap()
        .into_tensor()
        .unwrap();
    assert_close(&before, &after, 0.0);
    let live = m
        .forward(x, &SideInputs::new())
        .unwrap()
        .into_tensor()
        .unwrap();
    assert!(max_abs_diff(live.tensor(), before.tensor()) > 0.0);
    // Trainable flags.
    let p = &m.parameters()[0];
    p.set_trainable(false);
    assert!(m.trainable_parameters().is_empty());
    assert!(!p.value().requires_grad());
}

#[test]
fn state_variables_and_stateless_call() {
    let b = Builder::new(7);
    let lin = Linear::new(axes(&[("f", 3)]), axes(&[("g", 2)]))
        .build(&b.scope("lin"), None)
        .unwrap();
    let m = Sequential::new(vec![
        SaveIntermediate::build(&b.scope("save_in")),
        lin,
        SaveIntermediate::build(&b.scope("save_out")),
    ]);
    assert_eq!(m.state_variables().len(), 2);
    let x = named(&[4, 3], &["batch", "f"], 8);
    let y = m
        .forward(x.clone(), &SideInputs::new())
        .unwrap()
        .into_tensor()
        .unwrap();
    let saved = m.state_variables()[1].get().unwrap().into_tensor().unwrap();
    assert_close(&y, &saved, 0.0);

    // stateless_call: state in, state out; the tree's own variables are untouched.
    let fresh = Sequential::new(vec![SaveIntermediate::build(&b.scope("s"))]);
    let mut given = BTreeMap::new();
    given.insert("s.value".to_string(), None);
    let (out, new_state) = fresh
        .stateless_call(&given, x.clone(), &SideInputs::new())
        .unwrap();
    assert_close(&out.into_tensor().unwrap(), &x, 0.0);
    let st = new_state["s.value"].clone().unwrap().into_tensor().unwrap();
    assert_close(&st, &x, 0.0);
    assert!(fresh.state_variables()[0].get().is_none());
    let mut bad = BTreeMap::new();
    bad.insert("nope".to_string(), None);
    assert!(fresh
        .stateless_call(&bad, x.clone(), &SideInputs::new())
        .unwrap_err()
        .to_string()
        .contains("nope"));

    // unbind / bind / freeze for state.
    let (unbound, vars) = m.unbind_state_vars().unwrap();
    assert!(unbound.state_variables().is_empty());
    assert!(unbound.forward(x.clone(), &SideInputs::new()).is_err());
    let rebound = unbound.bind_state_vars(&vars).unwrap();
    assert!(rebound.forward(x.clone(), &SideInputs::new()).is_ok());
    let frozen = m.freeze_state_vars().unwrap();
    let e = frozen
        .forward(x, &SideInputs::new())
        .unwrap_err()
        .to_string();
    assert!(e.contains("frozen"), "{e}");
}

#[test]
fn random_stream_is_deterministic() {
    let a = RandomStream::new(5);
    let b = RandomStream::new(5);
    let ka: Vec<u64> = (0..4).map(|_| a.next_key()).collect();
    let kb: Vec<u64> = (0..4).map(|_| b.next_key()).collect();
    assert_eq!(ka, kb);
    assert_eq!(a.position(), 4);
    let c = RandomStream::at(5, 2);
    assert_eq!(c.next_key(), ka[2]);
    assert_ne!(RandomStream::new(6).next_key(), ka[0]);
}

#[test]
fn toml_round_trip_keeps_structure_and_labels() {
    let b = Builder::new(9);
    let attn = SelfAttentionConfig::new(8, 2, 4)
        .build(&b.scope("attn"))
        .unwrap();
    let m = Sequential::named(vec![
        ("mlp".into(), model(&b)),
        ("attn".into(), Residual::build(attn)),
        ("save".into(), SaveIntermediate::build(&b.scope("save"))),
    ]);
    let t = m.to_toml().unwrap();
    let text = toml::to_string(&t).unwrap();
    let parsed: toml::Table = toml::from_str(&text).unwrap();
    let back = Node::from_toml(&parsed, &pzt::builtin_registry()).unwrap();
    assert!(back.same_structure(&m));
    let rebound = back.bind(&m.parameters()).unwrap();
    let x = named(&[5, 3], &["seq", "features"], 10);
    let y1 = m
        .child("mlp")
        .unwrap()
        .forward(x.clone(), &SideInputs::new())
        .unwrap()
        .into_tensor()
        .unwrap();
    let y2 = rebound
        .child("mlp")
        .unwrap()
        .forward(x, &SideInputs::new())
        .unwrap()
        .into_tensor()
        .unwrap();
    assert_close(&y1, &y2, 0.0);
    let e = pzt::builtin_registry()
        .make_layer("Linearr", &toml::Table::new())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unknown layer kind `Linearr`") && e.contains("Linear"),
        "{e}"
    );
}

#[test]
fn render_shows_kinds_paths_and_shapes() {
    let m = model(&Builder::new(0));
    let text = m.render(usize::MAX);
    assert!(text.starts_with("Sequential\n"), "{text}");
    assert!(text.contains("  0: Affine"), "{text}");
    assert!(
        text.contains("linear: Linear({features: 3} -> {hidden: 5})  [weights: f32[3, 5]]"),
        "{text}"
    );
    let short = m.render(1);
    assert!(
        short.contains("{... 2 nodes}") && !short.contains("weights"),
        "{short}"
    );
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Doubler {
    factor: f64,
}

impl Layer for Doubler {
    pzt::layer_common!("TestDoubler");
    fn forward(&self, _n: &Node, x: Value, _s: &SideInputs) -> pzt::Result<Value> {
        Ok(x.into_tensor()?.mul_scalar(self.factor)?.into())
    }
}

#[test]
fn custom_layer_kinds_register_and_round_trip() {
    let mut reg = pzt::builtin_registry();
    reg.register_layer("TestDoubler", serde_factory::<Doubler>("TestDoubler"));
    let m = Sequential::new(vec![Node::new(Doubler { factor: 3.0 })]);
    // Without the registration the kind is unknown; the registry is a value, not a global.
    assert!(Node::from_toml(&m.to_toml().unwrap(), &pzt::builtin_registry()).is_err());
    let back = Node::from_toml(&m.to_toml().unwrap(), &reg).unwrap();
    assert!(back.same_structure(&m));
    let x = named(&[2], &["a"], 1);
    let y = back
        .forward(x.clone(), &SideInputs::new())
        .unwrap()
        .into_tensor()
        .unwrap();
    assert_close(&y, &x.mul_scalar(3.0).unwrap(), 0.0);
    assert!(reg.known_kinds().contains(&"TestDoubler".to_string()));
    assert_eq!(select(&m).at_instances_of("TestDoubler").count(), 1);
}
